"""bench/motion_reward_calibration.py: the candidate edits it scores, and the toy-object estimator's agreement with
the verifier on them (the bench's own headline)."""

import importlib.util
import json
from pathlib import Path

import numpy as np

from rewards.toyedit import edit_split, render_pair
from rewards.toyedit.verifier import verify_edit

_spec = importlib.util.spec_from_file_location(
    "motion_reward_calibration", Path(__file__).parent.parent / "bench" / "motion_reward_calibration.py")
calibration = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(calibration)


def test_candidates_are_the_true_edit_the_source_and_other_motions():
    for family in ("move", "swap"):
        spec = next(s for s in edit_split("test") if s.family == family)
        source, target = render_pair(spec)
        candidates = calibration.rendered_candidates(spec)
        assert np.array_equal(candidates[0], target) and np.array_equal(candidates[1], source)
        assert verify_edit(source, candidates[0], spec).strict and not verify_edit(source, candidates[1], spec).strict
        # the other candidates differ from both: moves elsewhere (or half as far), or half a swap
        assert all(not np.array_equal(c, target) and not np.array_equal(c, source) for c in candidates[2:])
    assert len(calibration.rendered_candidates(next(s for s in edit_split("test") if s.family == "move"))) >= 3


def test_the_toy_object_flow_ranks_candidates_as_the_verifier(tmp_path):
    assert calibration.main(["--estimators", "toy_objects", "--json", str(tmp_path / "c.json")]) == 0
    result = json.loads((tmp_path / "c.json").read_text())["toy_objects"]
    assert result["spearman"] > 0.8 and result["true"] == 1.0 and result["unedited"] < 1.0 and result["epe"] < 0.5
