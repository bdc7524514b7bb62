"""The toy CLAP (transformers ClapModel at 8 kHz): stock loading, its training, and the shipped weights as the
``clap`` reward and as the frame encoder of the distributional rewards."""

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import ClapModel, ClapProcessor

from genrl.toy.clap import ClapTrainConfig, build_toy_clap, clap_inputs, save_toy_clap, train_toy_clap
from rewards.base import projected_features
from rewards.registry import build_reward
from rewards.toyaudio import SAMPLE_RATE, TOY_CLAP_DIR, render, split
from rewards.toyaudio.prompts import spec_from_prompt
from rewards.toyaudio.world import vocabulary


def _unit(out) -> torch.Tensor:
    return F.normalize(projected_features(out), dim=-1)


SHIPPED = pytest.mark.skipif(not (TOY_CLAP_DIR / "config.json").is_file(), reason="toy CLAP weights not built")


def test_a_saved_toy_clap_loads_with_the_stock_classes_and_embeds_alike(tmp_path):
    model, processor = build_toy_clap(seed=0)
    save_toy_clap(model.eval(), processor, tmp_path / "clap")
    loaded, loaded_processor = ClapModel.from_pretrained(tmp_path / "clap"), ClapProcessor.from_pretrained(tmp_path / "clap")
    assert loaded_processor.feature_extractor.sampling_rate == SAMPLE_RATE
    prompts = ["a middle sine note then a drum hit", "three plucked notes rising"]
    assert all(loaded_processor.tokenizer.tokenize(w) == [w + "</w>"] for w in vocabulary())  # whole words
    clips = [render(spec_from_prompt(p), seed=i) for i, p in enumerate(prompts)]
    inputs = clap_inputs(loaded_processor, [spec_from_prompt(p) for p in prompts], clips)
    assert inputs["input_features"].shape == (2, 1, 63, 64)  # one channel of 63 frames x 64 mel bands
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits_per_audio, loaded.eval()(**inputs).logits_per_audio)
    assert [p.name for p in tmp_path.iterdir()] == ["clap"]  # written whole, no temporary folder left


def test_training_lowers_the_contrastive_loss_on_held_out_renders(tmp_path):
    specs = list(split("test"))[:16]
    rng = np.random.default_rng(0)
    clips = [render(s, rng) for s in specs]

    def loss(model, processor) -> float:
        with torch.no_grad():
            return model.eval()(**clap_inputs(processor, specs, clips), return_loss=True).loss.item()

    before = loss(*build_toy_clap(seed=0))
    train_toy_clap(ClapTrainConfig(steps=40, batch_size=32, warmup_steps=5, out_dir=str(tmp_path / "clap")),
                   log_path=tmp_path / "log.jsonl")
    assert '"test_retrieval_top1"' in (tmp_path / "log.jsonl").read_text().splitlines()[-1]
    after = loss(ClapModel.from_pretrained(tmp_path / "clap"), ClapProcessor.from_pretrained(tmp_path / "clap"))
    assert after < before - 0.3, (before, after)


def test_bad_settings_are_named(capsys):
    import importlib.util
    from pathlib import Path

    with pytest.raises(ValueError, match="steps=0"):
        ClapTrainConfig(steps=0)
    path = Path(__file__).resolve().parent.parent / "scripts" / "train_toy_clap.py"
    spec = importlib.util.spec_from_file_location("train_toy_clap", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for setting, message in (("batch_size=500", "batch_size=500 must be in 2..76"),
                             ("warmup_steps=0", "warmup_steps=0 must be >= 1"), ("lr=0", "lr=0.0 must be > 0")):
        assert script.main([setting]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and len(err.strip().splitlines()) == 1, err
    with pytest.raises(ValueError, match="model=toy is a transformers ClapModel"):
        build_reward("clap", model="toy", backend="laion_clap")


@SHIPPED
def test_the_shipped_toy_clap_tells_held_out_prompts_apart():
    """Held-out prompts (never trained on): a render's own prompt against every other prompt of its family."""
    model, processor = ClapModel.from_pretrained(TOY_CLAP_DIR).eval(), ClapProcessor.from_pretrained(TOY_CLAP_DIR)
    test = list(split("test"))
    rng = random.Random(5)
    hits = []
    for family in ("register", "counting", "sequence"):
        fam = [s for s in test if s.family == family]
        with torch.no_grad():
            text = _unit(model.get_text_features(**processor(text=[s.prompt for s in fam], padding=True,
                                                             return_tensors="pt")))
            clips = [render(s, rng.randrange(1 << 30)) for s in fam for _ in range(2)]
            audio = _unit(model.get_audio_features(**processor(audio=clips, sampling_rate=SAMPLE_RATE,
                                                               return_tensors="pt")))
        pred = (audio @ text.T).argmax(-1)
        hits.append((pred == torch.arange(len(fam)).repeat_interleave(2)).float().mean().item())
        assert hits[-1] > 1.5 / len(fam), (family, hits[-1])  # well above chance in every family


@SHIPPED
def test_the_clap_reward_on_the_toy_clap_prefers_the_right_prompt_at_any_input_rate():
    from scipy.signal import resample_poly

    reward = build_reward("clap", model="toy", sample_rate=SAMPLE_RATE)
    prompts = ["a high sine note", "four drum hits", "a low square chord", "two plucked notes falling"]
    clips = torch.from_numpy(np.stack([render(spec_from_prompt(p), seed=i) for i, p in enumerate(prompts)]))
    right = reward(clips, prompts).scores
    wrong = reward(clips, prompts[1:] + prompts[:1]).scores
    assert (right > wrong).all(), (right, wrong)
    # clips arriving at 16 kHz are resampled to the model's 8 kHz: the same scores up to the filters' error
    upsampled = torch.from_numpy(resample_poly(clips.double().numpy(), 2, 1, axis=-1)).float()
    again = build_reward("clap", model="toy", sample_rate=2 * SAMPLE_RATE)(upsampled, prompts).scores
    torch.testing.assert_close(again, right, atol=0.05, rtol=0)
    # bf16 clips (a generator under autocast) at the model's own rate, where nothing is resampled: scored as their
    # float32 values (bf16's rounding noise itself moves a log-mel spectrogram's silent bands, so not as `right`)
    rounded = clips.bfloat16()
    torch.testing.assert_close(reward(rounded, prompts).scores, reward(rounded.float(), prompts).scores)


@SHIPPED
def test_per_song_fd_on_toy_clap_windows_ranks_renders_above_noise():
    reward = build_reward("per_song_fd", encoder="clap", model="toy", sample_rate=SAMPLE_RATE, references="toy",
                          per_prompt=2, ridge=1e-3)
    specs = [spec_from_prompt(p) for p in ("three square notes rising", "a middle sine note then a drum hit")]
    renders = torch.from_numpy(np.stack([render(s, seed=3) for s in specs]))
    noise = torch.randn(renders.shape, generator=torch.Generator().manual_seed(0)) * 0.3
    scores = reward(torch.cat([renders, noise]), [s.prompt for s in specs] * 2).scores
    assert (scores <= 0).all() and scores[:2].min() > scores[2:].max(), scores


def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "toy_clap.py"
    spec = importlib.util.spec_from_file_location("toy_clap_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bench_agreement_measures_against_scipy():
    from scipy.stats import mannwhitneyu, spearmanr

    bench = _bench()
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=60), 1)  # rounded: ties, which both count as half
    positive = rng.random(60) < 0.4
    u = mannwhitneyu(scores[positive], scores[~positive]).statistic
    assert bench.auc(scores, positive) == pytest.approx(u / (positive.sum() * (~positive).sum()))
    assert np.isnan(bench.auc(scores, np.zeros(60, bool)))
    targets, groups = rng.random(60), np.repeat(np.arange(6), 10)
    expected = np.mean([spearmanr(scores[groups == g], targets[groups == g]).statistic for g in range(6)])
    assert bench.within_group_spearman(scores, targets, groups) == pytest.approx(expected)
    flat = targets.copy()
    flat[groups == 0] = 0.5  # a group without spread is left out, as a group-relative advantage leaves it
    expected = np.mean([spearmanr(scores[groups == g], flat[groups == g]).statistic for g in range(1, 6)])
    assert bench.within_group_spearman(scores, flat, groups) == pytest.approx(expected)


@SHIPPED
def test_the_bench_command_reports_what_it_measured(tmp_path, capsys):
    out = tmp_path / "clap.json"
    assert _bench().main(["--max-prompts", "3", "--renders", "1", "--clips-per-prompt", "2", "--threads", "1",
                          "--json", str(out)]) == 0
    import json

    report = json.loads(out.read_text())
    assert report["verifier_agreement"]["clips"] == 6 and 0 <= report["retrieval_top1"]["overall"] <= 1
    assert "on 6 generated clips" in capsys.readouterr().out
    for bad, message in ((["--max-prompts", "-1"], "--max-prompts=-1 must be >= 0"),
                         (["--clap", str(tmp_path / "none")], "no toy CLAP there"),
                         (["--threads", "0"], "--threads=0 must be >= 1")):
        with pytest.raises(SystemExit):
            _bench().main(bad)
        assert message in capsys.readouterr().err
