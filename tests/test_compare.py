"""bench/compare.py: the summary of finished runs (plot-only mode, no training)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("compare", ROOT / "bench" / "compare.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


def write_run(path: Path, evals: list[float]) -> None:
    """A metrics.jsonl with an evaluation every 5 epochs and a training record in between."""
    path.mkdir(parents=True)
    records = []
    for i, acc in enumerate(evals):
        records.append({"epoch": 5 * i, "samples": 160 * i, "time/train_s": 10.0 * i, "eval/strict": acc})
        records.append({"epoch": 5 * i + 1, "samples": 160 * i + 32, "time/train_s": 10.0 * i + 2})
    path.joinpath("metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")


def test_summary_counts_samples_and_time_to_target():
    records = [{"epoch": 0, "samples": 0, "time/train_s": 0.0, "eval/strict": 0.1},
               {"epoch": 5, "samples": 160, "time/train_s": 9.0},
               {"epoch": 10, "samples": 320, "time/train_s": 18.0, "eval/strict": 0.35},
               {"epoch": 15, "samples": 480, "time/train_s": 27.0, "eval/strict": 0.2}]
    s = compare.summarize("r", records, target=0.3, key="eval/strict")
    assert (s["start"], s["end"], s["best"]) == (0.1, 0.2, 0.35)
    assert (s["samples_to_target"], s["seconds_to_target"]) == (320, 18.0)
    assert (s["epochs"], s["samples"]) == (15, 480)
    assert compare.summarize("r", records, target=0.9, key="eval/strict")["samples_to_target"] is None


def test_plot_only_adds_run_dirs_by_name(tmp_path, capsys):
    write_run(tmp_path / "runs" / "toy", [0.2, 0.3, 0.4])
    write_run(tmp_path / "elsewhere" / "toy_allsteps", [0.2, 0.1])
    plot = tmp_path / "plot.png"
    assert compare.main(["--plot-only", "--configs", "configs/toy.yaml", "--out", str(tmp_path / "runs"),
                         "--run-dirs", str(tmp_path / "elsewhere" / "toy_allsteps"), "--plot", str(plot)]) == 0
    rows = {r["run"]: r for r in map(json.loads, capsys.readouterr().out.splitlines()[:-1])}
    assert set(rows) == {"toy", "toy_allsteps"}
    assert rows["toy"]["end"] == 0.4 and rows["toy_allsteps"]["end"] == 0.1
    assert plot.stat().st_size > 0


def test_run_dir_without_metrics_is_named(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        compare.main(["--plot-only", "--configs", "configs/toy.yaml", "--out", str(tmp_path),
                      "--run-dirs", str(tmp_path / "empty"), "--plot", str(tmp_path / "p.png")])
    assert f"{tmp_path / 'empty'} has no metrics.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()
