"""Command-line parsing of scripts/train_t2i.py, and its one-line errors before torch loads."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from test_config_cli import run_probe

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


@pytest.mark.parametrize("argv, culprit", [
    (["foo.bar=1"], "command-line override 'foo.bar=1'"),
    (["model.pretrained=./no-such-pipeline"], "model.pretrained"),
    (["sample.group_size=3"], "sample.group_size=3 must divide num_processes x sample.batch_size"),
    (["reward.weights={toy_verifier: nan}"], "reward.weights.toy_verifier=nan"),
    # more groups of distinct prompts per iteration than the toy training split has prompts
    (["sample.batch_size=512", "sample.group_size=1"],
     "= 512 distinct prompts per sampling iteration, but data.train_prompts has"),
    (["train.cfg=false"], "train.cfg was removed"),
])
def test_a_bad_command_line_fails_in_one_line_before_torch_loads(argv, culprit):
    result, stderr = run_probe(SCRIPT, argv)
    assert result == {"code": 2, "heavy": []}
    assert stderr.startswith("error: ") and culprit in stderr and stderr.count("\n") == 1, stderr


def test_malformed_yaml_fails_in_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1\n", encoding="utf-8")
    result, stderr = run_probe(SCRIPT, ["--config", str(bad)])
    assert result == {"code": 2, "heavy": []}
    assert stderr.startswith(f"error: invalid YAML in {bad}, line 2") and stderr.count("\n") == 1, stderr


def test_help_imports_no_heavy_module():
    result, _ = run_probe(SCRIPT, ["--help"])
    assert result == {"code": 0, "heavy": []}
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120,
                         check=True)
    assert "key=value overrides" in out.stdout


def test_the_shipped_accelerate_config_launches_one_process_without_the_defaults_warning(caplog):
    from accelerate.commands.config import default_config_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    config = SCRIPT.parents[1] / "configs" / "accelerate" / "single_process.yaml"
    parser = launch_command_parser()
    with caplog.at_level("WARNING"):
        # what `accelerate launch --config_file ... scripts/train_t2i.py` checks before it starts the script
        args, _, _ = _validate_launch_command(parser.parse_args(["--config_file", str(config), str(SCRIPT)]))
    assert "defaults used instead" not in caplog.text
    assert (args.num_processes, args.num_machines, args.mixed_precision, args.multi_gpu) == (1, 1, "no", False)
    # the check does see the warning: without a config (unless `accelerate config` wrote one) it is printed
    with caplog.at_level("WARNING"):
        _validate_launch_command(parser.parse_args(["--num_processes", "1", str(SCRIPT)]))
    assert "defaults used instead" in caplog.text or Path(default_config_file).is_file()
