"""Command-line parsing of scripts/train_t2i.py."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_t2i.py"
spec = importlib.util.spec_from_file_location("train_t2i", SCRIPT)
train_t2i = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_t2i)


def test_resume_takes_latest_or_a_path_and_leaves_overrides_alone(tmp_path):
    assert train_t2i.parse_args(["epochs=3", "--resume"])[1] == ["epochs=3", "resume=latest"]
    ckpt = tmp_path / "checkpoint-000010"
    assert train_t2i.parse_args(["--resume", str(ckpt), "epochs=3"])[1] == ["epochs=3", f"resume={ckpt}"]
    # the optional value must not swallow an override
    assert train_t2i.parse_args(["--resume", "log.output_dir=runs/a", "epochs=3"])[1] == [
        "log.output_dir=runs/a", "epochs=3", "resume=latest"]
    assert train_t2i.parse_args([])[1] == []
    assert train_t2i.parse_args(["--config", "c.yaml"])[0] == "c.yaml"


def test_overrides_may_come_before_and_after_options():
    config, overrides = train_t2i.parse_args(["epochs=3", "--config", "c.yaml", "seed=1", "--resume"])
    assert config == "c.yaml"
    assert overrides == ["epochs=3", "seed=1", "resume=latest"]
