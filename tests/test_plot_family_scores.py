"""bench/plot_family_scores.py: grouped bars from genrl.toy.evaluate's JSON files."""

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("plot_family_scores", ROOT / "bench" / "plot_family_scores.py")
plot_family_scores = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plot_family_scores)


def _report(path: Path, value: float) -> Path:
    scores = {"single_object": value, "position": value / 2}
    path.write_text(json.dumps({"strict": scores, "partial": scores, "overall_strict": 0.75 * value,
                                "overall_partial": 0.75 * value, "num_images": 8}))
    return path


def test_two_evaluations_make_one_plot(tmp_path):
    files = [str(_report(tmp_path / "a.json", 0.4)), str(_report(tmp_path / "b.json", 0.8))]
    assert plot_family_scores.main([*files, "--labels", "base", "run", "--out", str(tmp_path / "p.png")]) == 0
    assert Image.open(tmp_path / "p.png").size[0] > 500


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    good = str(_report(tmp_path / "a.json", 0.4))
    with pytest.raises(SystemExit):
        plot_family_scores.main([good, "--labels", "a", "b", "--out", str(tmp_path / "p.png")])
    assert "2 labels for 1 files" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SystemExit):
        plot_family_scores.main([str(tmp_path / "broken.json"), "--out", str(tmp_path / "p.png")])
    assert "broken.json: not a readable evaluation JSON" in capsys.readouterr().err
