"""Artifact detectors: the VLM yes/no judge, the trainable feature classifier (+ script) and the shipped toy one."""

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tiny_models import save_tiny_vlm

from genrl.toy.artifacts import ARTIFACT_KINDS, add_artifact, artifact_dataset
from rewards import build_reward
from rewards.artifacts import binary_metrics, load_detector
from rewards.toyworld.prompts import split
from rewards.toyworld.render import render

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_artifact_detector.py"


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vlm")
    save_tiny_vlm(path)
    return str(path)


def _images(n, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_vlm_yes_probability_matches_the_models_next_token_logits(vlm_dir):
    judge = build_reward("vlm_judge", model=vlm_dir)
    images, prompts = _images(3), ["a red circle", "two squares", "a photo of a red circle"]
    scores = judge(images, prompts).scores
    tok = judge.processor.tokenizer
    yes, no = [tok.convert_tokens_to_ids(w) for w in ("Yes", "yes")], [tok.convert_tokens_to_ids(w) for w in ("No", "no")]
    for i in range(3):  # one unbatched forward per image, computed here from the raw logits
        text = judge.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": judge.question.format(
                prompt=prompts[i])}]}], add_generation_prompt=True, tokenize=False)
        inputs = judge.processor(text=[text], images=[(images[i] * 255).round().byte()], return_tensors="pt")
        with torch.no_grad():
            p = judge.model(**inputs).logits[0, -1].softmax(-1)
        assert scores[i].item() == pytest.approx((p[yes].sum() / (p[yes].sum() + p[no].sum())).item(), abs=1e-5)
    # batching (prompts of different token lengths) does not change a score
    torch.testing.assert_close(torch.cat([judge(images[i:i + 1], prompts[i:i + 1]).scores for i in range(3)]), scores)


def test_artifact_judge_is_one_minus_p_yes_and_digits_are_an_expected_rating(vlm_dir):
    question = "Does this image show a red circle"
    p_yes = build_reward("vlm_judge", model=vlm_dir, question=question)(_images(2), ["x", "y"]).scores
    artifact = build_reward("artifact_judge", model=vlm_dir, question=question)(_images(2), ["x", "y"]).scores
    torch.testing.assert_close(artifact, 1 - p_yes)
    rating = build_reward("vlm_judge", model=vlm_dir, mode="digits", digits=(1, 2, 3, 4, 5), question=question)
    probs = rating.answer_probabilities(_images(2), ["x", "y"])
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    expected = (probs @ torch.arange(1.0, 6.0) - 1) / 4
    torch.testing.assert_close(rating(_images(2), ["x", "y"]).scores, expected)
    with pytest.raises(ValueError, match="no token for yes_words"):
        build_reward("vlm_judge", model=vlm_dir, yes_words=("Affirmative",))


def test_synthetic_artifacts_change_the_scene_and_every_kind_is_drawn():
    rng = random.Random(0)
    image, objects = render(split("train")[10], rng)
    for kind in ARTIFACT_KINDS:
        assert np.abs(add_artifact(image, objects, kind, rng).astype(int) - image).sum() > 0, kind
    with pytest.raises(ValueError, match="unknown artifact kind"):
        add_artifact(image, objects, "smudge", rng)
    images, labels, kinds = artifact_dataset(16, random.Random(1))
    assert images.shape == (16, 32, 32, 3) and labels.sum() == 8 and set(kinds) == {"clean", *ARTIFACT_KINDS}


def test_binary_metrics_match_their_definitions():
    pred = torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.bool)
    labels = torch.tensor([1, 0, 0, 1, 1, 0])
    m = binary_metrics(pred, labels)  # tp 2, fp 1, fn 1, tn 2
    assert m["accuracy"] == pytest.approx(4 / 6) and m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3)


def test_shipped_toy_detector_separates_fresh_clean_and_artifact_scenes():
    detector = build_reward("artifact_classifier", detector="toy")
    config, _ = load_detector(detector.config_path)
    images, labels, _ = artifact_dataset(200, random.Random(123), "test")  # unseen scenes of held-out prompts
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    p_clean = detector(x, ["p"] * 200).scores
    assert ((p_clean >= 0) & (p_clean <= 1)).all()
    accuracy = ((p_clean < 0.5).long() == torch.from_numpy(labels)).float().mean().item()
    assert accuracy >= 0.7 and config["metrics"]["validation"]["f1"] >= 0.7
    assert p_clean[labels == 0].mean() > p_clean[labels == 1].mean() + 0.2


def test_detector_script_trains_on_a_labelled_folder_and_the_reward_loads_it(tmp_path):
    from PIL import Image

    images, labels, _ = artifact_dataset(80, random.Random(0))
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = tmp_path / "data" / ("artifact" if label else "clean")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    out = tmp_path / "detector"
    result = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path / "data"), "--backbone", "toy",
                             "--out", str(out), "--steps", "50"], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((out / "artifact_detector.json").read_text())
    assert config["backbone"] == "toy" and config["metrics"]["validation"]["n"] == 16
    reward = build_reward("artifact_classifier", detector=str(out))
    scores = reward(torch.from_numpy(images[:4]).permute(0, 3, 1, 2).float() / 255, ["p"] * 4).scores
    assert scores.shape == (4,)
    # a folder without artifact/ images is refused with its path
    (tmp_path / "bad" / "clean").mkdir(parents=True)
    Image.fromarray(images[0]).save(tmp_path / "bad" / "clean" / "0.png")
    bad = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path / "bad"), "--out", str(tmp_path / "o"),
                          "--backbone", "toy"], capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode != 0 and "artifact" in bad.stderr and not (tmp_path / "o").exists()


def test_edit_judge_rates_source_and_edit_together(vlm_dir):
    judge = build_reward("vlm_judge", model=vlm_dir, mode="digits", with_source=True)
    assert judge.digits == (0, 1, 2, 3, 4, 5) and judge.required_metadata == ("image",)
    edits, sources = _images(2, seed=1), _images(2, seed=2)
    prompts = ["move the red circle left", "make the square bigger"]
    scores = judge(edits, prompts, [{"image": s} for s in sources]).scores
    digit_ids = [judge.processor.tokenizer.convert_tokens_to_ids(str(d)) for d in range(6)]
    for i in range(2):  # source first, then the edit, in one chat: computed here from the raw logits
        text = judge.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                          {"type": "text", "text": judge.question.format(prompt=prompts[i])}]}],
            add_generation_prompt=True, tokenize=False)
        pixels = [(x * 255).round().byte() for x in (sources[i], edits[i])]
        inputs = judge.processor(text=[text], images=pixels, return_tensors="pt")
        with torch.no_grad():
            p = judge.model(**inputs).logits[0, -1].softmax(-1)[digit_ids]
        assert scores[i].item() == pytest.approx((p @ torch.arange(6.0) / p.sum()).item() / 5, abs=1e-5)
    # another source changes the rating: the judge sees it
    assert not torch.allclose(judge(edits, prompts, [{"image": e} for e in edits]).scores, scores)
    with pytest.raises(KeyError, match="sample 0 lacks metadata \\['image'\\]"):
        judge(edits, prompts, [{}, {}])


def test_uniform_digit_logits_rate_one_half(vlm_dir, monkeypatch):
    judge = build_reward("vlm_judge", model=vlm_dir, mode="digits", with_source=True)
    vocab = judge.model.config.text_config.vocab_size

    class Flat(torch.nn.Module):
        def forward(self, input_ids, **kwargs):
            return type("Out", (), {"logits": torch.zeros(input_ids.shape[0], input_ids.shape[1], vocab)})()

    monkeypatch.setattr(judge, "model", Flat())
    judge.model.dtype = torch.float32
    scores = judge(_images(3), ["a", "b", "c"], [{"image": s} for s in _images(3, seed=4)]).scores
    torch.testing.assert_close(scores, torch.full((3,), 0.5))
