"""The shipped toy video-text model and OT map: stock loading, what they tell apart on held-out prompts, and the
PISCES rewards they give rendered clips of a prompt against another prompt of its family."""

import random

import torch
from transformers import AutoTokenizer

from genrl.toy.video_text import evaluate_video_text, render_clips, same_meaning
from rewards import build_reward
from rewards.pisces_rewards import load_ot_map
from rewards.toyvideo import TOY_OT_MAP_DIR, TOY_VIDEO_TEXT_DIR, split
from rewards.video_text import VideoTextModel


def test_the_shipped_model_loads_with_transformers_and_tells_held_out_prompts_apart():
    model = VideoTextModel.from_pretrained(TOY_VIDEO_TEXT_DIR).eval()  # the stock loader, no arguments
    tokenizer = AutoTokenizer.from_pretrained(TOY_VIDEO_TEXT_DIR / "tokenizer")
    out = evaluate_video_text(model, tokenizer, list(split("test")), random.Random(5), per_prompt=2)
    # measured with 4 clips per prompt at training's end: 0.956 retrieval, 0.994 pairwise; here
    # (2 clips per prompt) 0.975 and 0.988
    assert out["retrieval_top1"]["overall"] >= 0.85
    assert out["itm_pairwise"]["overall"] >= 0.9


def test_the_pisces_rewards_prefer_a_clips_own_prompt_to_another_of_its_family():
    specs = list(split("test"))
    rng = random.Random(3)
    others = [rng.choice([o for o in specs if o.family == s.family and not same_meaning(o, s)]) for s in specs]
    clips = render_clips(specs, random.Random(4))
    _, config = load_ot_map(TOY_OT_MAP_DIR)
    assert config["dim"] == 32 and config["embedder"] == "toy"
    for name in ("pisces_quality", "pisces_semantic"):
        reward = build_reward(name)
        with torch.no_grad():
            own = reward(clips, [s.prompt for s in specs]).scores
            other = reward(clips, [o.prompt for o in others]).scores
        assert (own > other).float().mean() >= 0.9, name  # 1.0 for both when measured
