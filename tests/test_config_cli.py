"""The bench and sample scripts check their command line and config before torch and the models
load: ``--help`` and bad input import no heavy module and end with one ``error:`` line, exit status 2."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "diffusers", "transformers", "accelerate")

#: Runs a script as ``__main__`` and reports its exit status and which heavy modules it imported.
PROBE = """
import json, runpy, sys
sys.argv = [{script!r}, *{argv!r}]
try:
    runpy.run_path({script!r}, run_name="__main__")
    code = 0
except SystemExit as exit:
    code = exit.code
print(json.dumps({{"code": code, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def run_probe(script: Path, argv: list[str]) -> tuple[dict, str]:
    """``script`` run with ``argv`` in a fresh interpreter (this one has torch imported already):
    ``({"code": exit status, "heavy": heavy modules imported}, stderr)``."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(script=str(script), argv=argv, heavy=HEAVY)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def _last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


BENCH = ["build_random_sd3", "compare", "gradient_snr", "overhead", "reward_throughput", "reward_variance",
         "throughput", "toy_video_gates", "toy_audio_gates", "toy_audio_vae", "toy_clap"]


@pytest.mark.parametrize("script", [ROOT / "bench" / f"{name}.py" for name in BENCH]
                         + [ROOT / "scripts" / "sample_grid.py", ROOT / "scripts" / "make_samples.py"],
                         ids=lambda p: p.stem)
def test_help_imports_no_heavy_module(script):
    result, _ = run_probe(script, ["--help"])
    assert result == {"code": 0, "heavy": []}


@pytest.mark.parametrize("name", ["gradient_snr", "overhead", "reward_variance", "compare"])
def test_a_bad_config_key_in_a_bench_fails_in_one_line_before_torch(name):
    result, stderr = run_probe(ROOT / "bench" / f"{name}.py", ["foo.bar=1"])
    assert result == {"code": 2, "heavy": []}
    assert stderr == "error: invalid configuration in the command-line override 'foo.bar=1': " \
                     "foo: Key 'foo' not in 'ExperimentConfig'\n"


def test_bench_arguments_are_checked_before_torch():
    result, _ = run_probe(ROOT / "bench" / "reward_variance.py", ["--windows", "3:1"])
    assert result["heavy"] == [] and result["code"].startswith("error: window '3:1'")  # SystemExit(message)
    result, stderr = run_probe(ROOT / "bench" / "reward_throughput.py", ["--threads", "0"])
    assert result == {"code": 2, "heavy": []} and "--threads" in _last_line(stderr)
    result, stderr = run_probe(ROOT / "bench" / "build_random_sd3.py", ["--out", "x", "--layers", "0"])
    assert result == {"code": 2, "heavy": []} and "--layers" in _last_line(stderr)


def test_sample_grid_rejects_bad_input_in_one_line_before_torch(tmp_path):
    script = ROOT / "scripts" / "sample_grid.py"
    out = ["--out", str(tmp_path / "g.png")]
    result, stderr = run_probe(script, ["--model", str(tmp_path / "missing"), *out])
    assert result == {"code": 2, "heavy": []}
    assert stderr == f"error: --model {str(tmp_path / 'missing')!r}: model directory not found: {tmp_path / 'missing'}\n"
    result, stderr = run_probe(script, ["--prompts", str(tmp_path / "none.txt"), *out])
    assert result == {"code": 2, "heavy": []} and stderr.startswith("error: prompt file not found")
    result, stderr = run_probe(script, ["--reward", "no_such_reward", *out])
    assert result == {"code": 2, "heavy": []} and "--reward: unknown reward 'no_such_reward'" in _last_line(stderr)
    assert not (tmp_path / "g.png").exists()


def test_make_samples_checks_the_run_before_anything_loads_or_is_written(tmp_path):
    result, stderr = run_probe(ROOT / "scripts" / "make_samples.py", ["--run", str(tmp_path)])
    assert result == {"code": 2, "heavy": []} and "no final/pipeline or final/lora" in _last_line(stderr)


def test_evaluate_checks_its_arguments_before_the_pipeline_loads(tmp_path, monkeypatch):
    from genrl.models import loading
    from genrl.toy import evaluate

    def fail(*args, **kwargs):
        raise AssertionError("the pipeline must not load for a bad command line")

    monkeypatch.setattr(loading, "load_pipeline", fail)
    for argv in (["--model", str(tmp_path / "missing")], ["--images-per-prompt", "0"],
                 ["--json", str(tmp_path / "no" / "s.json")], ["--lora", str(tmp_path / "nope")]):
        with pytest.raises(SystemExit) as exit:
            evaluate.main(argv)
        assert exit.value.code == 2


def test_the_scripts_and_docs_name_config_files_that_exist():
    named = {}
    for path in [*sorted((ROOT / "scripts").glob("*.py")), *sorted((ROOT / "bench").glob("*.py")),
                 ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for ref in re.findall(r"configs/[\w./-]+?\.yaml", path.read_text(encoding="utf-8")):
            named.setdefault(ref, []).append(path.relative_to(ROOT).as_posix())
    missing = {ref: where for ref, where in named.items() if not (ROOT / ref).is_file()}
    assert not missing, f"config files named but not shipped: {missing}"
    # the training script's usage text is among them: its examples are runnable as written
    usage = (ROOT / "scripts" / "train_t2i.py").read_text(encoding="utf-8").split('"""')[1]
    assert {"configs/sd3.5m_pickscore.yaml", "configs/accelerate/single_process.yaml"} <= set(
        re.findall(r"configs/[\w./-]+?\.yaml", usage))
