"""The PISCES rewards on a video-text model: R_Q with a saved OT map, R_S with the OT plan fused into the fusion
encoder's cross-attention, the OT map's training and script, the video-text model and the embedders. Tiny
randomly initialised models built here; the shipped toy models are checked in test_toy_video_text.py."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from genrl.toy.video_text import video_text_tokenizer
from rewards.pisces import OTMap, token_cost, unbalanced_sinkhorn, video_token_geometry
from rewards.pisces_rewards import (
    PiscesQualityReward,
    PiscesSemanticReward,
    load_ot_map,
    ot_fusion_hook,
    save_ot_map,
    semantic_reward,
)
from rewards.video_embedders import FrameClipEmbedder, XClipEmbedder, build_video_text_embedder, even_frames
from rewards.video_text import VideoTextModel, load_video_text_model

PROMPTS = ["a video of a red circle moving left", "a video of two blue squares moving up"]


@pytest.fixture(scope="module")
def model_dir(video_text_model_dir):
    return video_text_model_dir


@pytest.fixture(scope="module")
def ot_map_dir(tmp_path_factory, model_dir):
    torch.manual_seed(0)
    model, _ = load_video_text_model(model_dir)
    path = tmp_path_factory.mktemp("ot-map")
    save_ot_map(OTMap(model.config.embed_dim, 16), path)
    return path


def _clips(n=2, seed=0, requires_grad=False):
    return torch.rand(n, 9, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).requires_grad_(requires_grad)


def test_the_video_text_model_round_trips_and_names_a_wrong_clip(model_dir):
    model, tokenizer = load_video_text_model(model_dir)
    fresh = VideoTextModel.from_pretrained(model_dir)
    clips = _clips()
    # (the frozen model takes torch's fused inference path of the encoder layers: equal up to rounding)
    assert torch.allclose(model.encode_video(clips)[1], fresh.encode_video(clips)[1], atol=1e-6)
    tokens, emb = model.encode_video(clips)
    assert tokens.shape == (2, 1 + 9 * 16, model.config.width)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2))
    ids, mask = model.tokenize(tokenizer, PROMPTS)
    lexical = model.lexical_rows(ids, mask)
    # words only: 8 and 9 words of the two prompts
    assert lexical.sum(1).tolist() == [len(p.split()) for p in PROMPTS]
    with pytest.raises(ValueError, match=r"\(B, 9, 3, 32, 32\).*\(2, 5, 3, 32, 32\)"):
        model.encode_video(torch.rand(2, 5, 3, 32, 32))


def test_the_fusion_hook_rewrites_only_the_word_rows_with_the_plan(model_dir):
    model, tokenizer = load_video_text_model(model_dir)
    ids, mask = model.tokenize(tokenizer, PROMPTS[:1])
    lexical = model.lexical_rows(ids, mask)[0]
    frames, positions = video_token_geometry(9, 4)
    hook = ot_fusion_hook(lexical, frames, positions, 9)
    g = torch.Generator().manual_seed(1)
    n, m, w = ids.shape[1], frames.numel(), model.config.width
    probs = torch.softmax(torch.randn(1, 2, n, m, generator=g), -1)
    q, k = torch.randn(1, n, w, generator=g), torch.randn(1, m, w, generator=g)
    fused = hook(probs, q, k, 0)
    rows = lexical.nonzero().squeeze(1)
    assert torch.equal(fused[0, :, ~lexical], probs[0, :, ~lexical])  # start, end and padding rows untouched
    assert torch.allclose(fused.sum(-1), torch.ones(1, 2, n), atol=1e-5)
    for h in range(2):  # an independent composition of the spec's steps for each head
        plan = unbalanced_sinkhorn(token_cost(q[0, rows], k[0], probs[0, h, rows], frames, positions, 9))
        expected = torch.softmax(torch.log(probs[0, h, rows].clamp_min(1e-6)) + torch.log(plan.clamp_min(1e-6)), -1)
        assert torch.allclose(fused[0, h, rows], expected, atol=1e-6)
    with pytest.raises(ValueError, match="one video at a time"):
        hook(probs.expand(2, -1, -1, -1), q.expand(2, -1, -1), k.expand(2, -1, -1), 0)


def test_the_semantic_reward_is_a_probability_with_gradients_to_the_pixels_only(model_dir):
    reward = PiscesSemanticReward(model=str(model_dir))
    clips = _clips(requires_grad=True)
    out = reward(clips, PROMPTS)
    assert out.scores.shape == (2,) and ((out.scores >= 0) & (out.scores <= 1)).all()
    out.scores.sum().backward()
    assert clips.grad is not None and clips.grad.abs().sum() > 0
    assert all(p.grad is None for p in reward.model.parameters())
    # the OT fusion changes the score; without it the reward is the plain matching probability
    plain = PiscesSemanticReward(model=str(model_dir), pot=False)(clips.detach(), PROMPTS).scores
    model, tokenizer = reward.model, reward.tokenizer
    ids, mask = model.tokenize(tokenizer, PROMPTS)
    with torch.no_grad():
        logits = model.match_logits(model.encode_text(ids, mask)[0], mask, model.encode_video(clips)[0])
    assert torch.allclose(plain, torch.softmax(logits, -1)[:, 1], atol=1e-6)
    assert not torch.allclose(plain, out.scores.detach(), atol=1e-6)
    with pytest.raises(ValueError, match="one video at a time"):
        semantic_reward(model, clips.detach(), ids, mask)


def test_the_quality_reward_is_the_cosine_with_the_mapped_text(model_dir, ot_map_dir):
    reward = PiscesQualityReward(embedder=str(model_dir), ot_map=str(ot_map_dir))
    clips = _clips(requires_grad=True)
    out = reward(clips, PROMPTS)
    model, tokenizer = load_video_text_model(model_dir)
    T, _ = load_ot_map(ot_map_dir)
    with torch.no_grad():
        v = model.encode_video(clips)[1]
        t = model.encode_text(*model.tokenize(tokenizer, PROMPTS))[1]
        expected = F.cosine_similarity(v, T(F.normalize(t, dim=-1)), dim=-1)
    assert torch.allclose(out.scores.detach(), expected, atol=1e-6)
    assert ((out.scores >= -1) & (out.scores <= 1)).all()
    out.scores.sum().backward()
    assert clips.grad.abs().sum() > 0
    assert all(p.grad is None for p in reward.T.parameters())
    assert all(p.grad is None for p in reward.embedder.model.parameters())


def test_the_rewards_refuse_bad_input_naming_it(model_dir, ot_map_dir, tmp_path):
    quality = PiscesQualityReward(embedder=str(model_dir), ot_map=str(ot_map_dir))
    semantic = PiscesSemanticReward(model=str(model_dir))
    for reward in (quality, semantic):
        with pytest.raises(ValueError, match=r"videos of shape \(N, F, 3, H, W\)"):
            reward(torch.rand(2, 3, 32, 32), PROMPTS)  # images
        with pytest.raises(ValueError, match=r"\(B, 9, 3, 32, 32\)"):
            reward(torch.rand(2, 9, 3, 16, 16), PROMPTS)  # the wrong size
    with pytest.raises(ValueError, match="needs its own ot_map"):
        PiscesQualityReward(embedder="clip:local-dir:/nowhere")
    wrong = tmp_path / "wide-map"
    save_ot_map(OTMap(48, 16), wrong)
    with pytest.raises(ValueError, match="maps 48-d embeddings"):
        PiscesQualityReward(embedder=str(model_dir), ot_map=str(wrong))
    with pytest.raises(FileNotFoundError, match="no OT map"):
        load_ot_map(tmp_path / "missing")
    with pytest.raises(ValueError, match="package.module:function"):
        PiscesSemanticReward(loader="no_colon")
    with pytest.raises(ValueError, match="cannot load loader 'no_such_module_here:load'"):
        PiscesSemanticReward(loader="no_such_module_here:load")


def test_a_user_loader_supplies_the_semantic_model(model_dir, tmp_path, monkeypatch):
    (tmp_path / "my_video_model.py").write_text(
        "from rewards.video_text import load_video_text_model\n"
        "def load():\n"
        f"    model, tokenizer = load_video_text_model({str(model_dir)!r})\n"
        "    return model.train().requires_grad_(True), tokenizer\n")  # as a user's loader may leave it
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = PiscesSemanticReward(loader="my_video_model:load")
    assert not reward.model.training and not any(p.requires_grad for p in reward.model.parameters())
    by_loader = reward(_clips(), PROMPTS).scores
    by_path = PiscesSemanticReward(model=str(model_dir))(_clips(), PROMPTS).scores
    assert torch.equal(by_loader, by_path)


def test_the_ot_map_training_keeps_the_best_round_and_moves_toward_the_videos():
    from rewards.ot_map_training import OTMapTrainConfig, map_metrics, train_ot_map

    g = torch.Generator().manual_seed(0)
    text = torch.randn(600, 8, generator=g)
    video = F.normalize(text @ torch.randn(8, 8, generator=g) + 2.0, dim=-1)  # another region of the sphere
    log: list[dict] = []
    cfg = OTMapTrainConfig(rounds=60, eval_every=20, batch_size=64, lr=1e-3)
    _, record = train_ot_map(text[:500], video[:500], text[500:], video[500:], cfg, log.append)
    assert record["selected"]["mutual_knn"] == max(r["mutual_knn"] for r in log if r["round"] > 0)
    assert record["selected"]["round"] > 0  # never the untrained map, however well it keeps neighbourhoods
    assert record["hidden"] == 16
    # evaluated only at its end, the run returns its last map: it carries the texts toward their videos
    cfg.rounds = cfg.eval_every = 200
    T, _ = train_ot_map(text[:500], video[:500], text[500:], video[500:], cfg, log.append)
    before = map_metrics(OTMap(8, 16), text[500:], video[500:])
    after = map_metrics(T, text[500:], video[500:])
    assert after["cos_paired"] > before["cos_paired"] + 0.3


def test_the_map_script_trains_from_features_and_the_reward_loads_its_map(model_dir, tmp_path):
    model, tokenizer = load_video_text_model(model_dir)
    with torch.no_grad():
        clips = _clips(n=40, seed=2)
        prompts = [PROMPTS[i % 2] for i in range(40)]
        video = model.encode_video(clips)[1]
        text = model.encode_text(*model.tokenize(tokenizer, prompts))[1]
    save_file({"text": text.contiguous(), "video": video.contiguous()}, tmp_path / "feats.safetensors")
    out = tmp_path / "map"
    done = subprocess.run([sys.executable, "scripts/train_ot_map.py", "--features", str(tmp_path / "feats.safetensors"),
                           "--out", str(out), "--rounds", "5", "--eval-every", "5", "--threads", "1"],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    scores = PiscesQualityReward(embedder=str(model_dir), ot_map=str(out))(clips[:2], PROMPTS).scores
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    save_file({"text": text[:, :4].contiguous(), "video": video.contiguous()}, tmp_path / "bad.safetensors")
    bad = subprocess.run([sys.executable, "scripts/train_ot_map.py", "--features", str(tmp_path / "bad.safetensors"),
                          "--out", str(out)], check=False, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "must be paired" in bad.stderr


def test_even_frames_and_the_real_model_embedders(tmp_path):
    clips = _clips(n=2)
    picked = even_frames(clips, 4)
    assert torch.equal(picked, clips[:, [0, 3, 5, 8]])
    # X-CLIP, built from a tiny config with the toy tokenizer (a CLIPTokenizer) as its tokenizer
    from transformers import XCLIPConfig, XCLIPModel

    config = XCLIPConfig(
        text_config={"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 32},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 16, "num_frames": 4, "mit_hidden_size": 32,
                       "mit_intermediate_size": 64, "mit_num_hidden_layers": 1, "mit_num_attention_heads": 2},
        projection_dim=32, prompt_layers=1, prompt_attention_heads=2)  # MIT width = projection, as released
    XCLIPModel(config).save_pretrained(tmp_path / "xclip")
    video_text_tokenizer().save_pretrained(tmp_path / "xclip")
    for embedder in (build_video_text_embedder(f"xclip:{tmp_path / 'xclip'}"),
                     build_video_text_embedder("clip:local-dir:" + str(_toy_clip_dir()))):
        assert isinstance(embedder, XClipEmbedder | FrameClipEmbedder)
        x = clips.clone().requires_grad_(True)
        v, t = embedder.embed_video(x), embedder.embed_text(PROMPTS)
        assert v.shape == t.shape == (2, embedder.dim)
        assert torch.allclose(v.norm(dim=-1), torch.ones(2), atol=1e-5)
        v.sum().backward()
        assert x.grad.abs().sum() > 0 and not t.requires_grad


def _toy_clip_dir():
    from rewards.toyworld import TOY_CLIP_DIR

    return TOY_CLIP_DIR
