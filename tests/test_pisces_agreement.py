"""bench/pisces_agreement.py: the agreement statistics between a reward and the verifier, and its command line."""

import importlib.util
from itertools import product
from pathlib import Path

import numpy as np
import pytest

_path = Path(__file__).resolve().parent.parent / "bench" / "pisces_agreement.py"
_spec = importlib.util.spec_from_file_location("pisces_agreement", _path)
agreement = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(agreement)


def test_auc_is_the_mann_whitney_probability():
    scores = np.array([0.9, 0.2, 0.5, 0.5, 0.1])
    positive = np.array([True, False, True, False, False])
    # positives 0.9 and 0.5 against negatives 0.2, 0.5, 0.1: 0.9 wins 3; 0.5 wins 2 and ties 1 -> (3 + 2.5) / 6
    assert agreement.auc(scores, positive) == pytest.approx(5.5 / 6)
    assert np.isnan(agreement.auc(scores, np.ones(5, dtype=bool)))


def test_within_prompt_agreement_only_compares_clips_of_one_prompt():
    rng = np.random.default_rng(0)
    scores, positive = rng.random(12), rng.random(12) < 0.5
    prompt = np.repeat(np.array(["a", "b", "c"]), 4)
    expected = [(scores[i] > scores[j]) + 0.5 * (scores[i] == scores[j])
                for i, j in product(range(12), range(12))
                if prompt[i] == prompt[j] and positive[i] and not positive[j]]
    share, pairs = agreement.within_prompt_agreement(scores, positive, prompt)
    assert pairs == len(expected) and share == pytest.approx(np.mean(expected))
    # a reward that is the verifier orders every pair right
    assert agreement.within_prompt_agreement(positive.astype(float), positive, prompt)[0] == 1.0


def test_families_that_select_no_prompt_are_refused_by_name(capsys):
    with pytest.raises(SystemExit) as exit:
        agreement.main(["--families", "juggling"])
    assert exit.value.code == 2 and "--families juggling" in capsys.readouterr().err
