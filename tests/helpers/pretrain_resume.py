"""The resumption check every toy pretraining shares: a run killed right after a checkpoint of a stage resumes to
the weights and log of the uninterrupted run, and refuses to resume with other settings."""

import json

import pytest
import torch

from genrl.toy.pretrain import PretrainError, resume_dir


def check_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch, *, run_class, config, pretrain, weights, die_in,
                                           changed: tuple[str, object]) -> None:
    """``pretrain(config(out_dir=...), log_path=...)`` straight, then killed after ``run_class.save_state`` of stage
    ``die_in`` and resumed (after a refused resume with ``changed`` = (key, other value)); ``weights(path)`` is
    every saved weight and config value to compare."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    pretrain(config(out_dir=str(straight)), log_path=tmp_path / "straight.jsonl")
    original = run_class.save_state

    def save_then_die(self, stage, step, opt, ema):
        original(self, stage, step, opt, ema)
        if stage == die_in and step > 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(run_class, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(config(out_dir=str(resumed)), log_path=tmp_path / "resumed.jsonl")
    assert (resume_dir(resumed) / "state.pt").is_file() and not resumed.exists()
    key, value = changed
    with pytest.raises(PretrainError, match=rf"other settings \({key}\).*fresh=true"):
        pretrain(config(out_dir=str(resumed), **{key: value}))
    monkeypatch.setattr(run_class, "save_state", original)
    pretrain(config(out_dir=str(resumed)), log_path=tmp_path / "resumed.jsonl")
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)
    log = [json.loads(line) for line in (tmp_path / "resumed.jsonl").read_text().splitlines()]
    straight_log = [json.loads(line) for line in (tmp_path / "straight.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log].count("resume") == 1 and log[-1]["stage"] == "final"
    assert [(r["stage"], r["step"], r["loss"]) for r in log if "loss" in r] == \
        [(r["stage"], r["step"], r["loss"]) for r in straight_log if "loss" in r]
    assert not resume_dir(resumed).exists()
