"""bench/dragon_win_rates.py: the win rate of per-prompt values and the command line's checks."""

import importlib.util
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parent.parent / "bench" / "dragon_win_rates.py"
_spec = importlib.util.spec_from_file_location("dragon_win_rates", _path)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_win_rate_counts_ties_as_half():
    # prompt 0 won, 1 tied, 2 lost, 3 won
    rate, ties = bench.win_rate([0.5, 1.0, 0.2, -1.0], [0.25, 1.0, 0.3, -2.0])
    assert rate == pytest.approx((2 + 0.5) / 4) and ties == pytest.approx(0.25)
    assert bench.win_rate([1.0, 2.0], [0.0, 1.0]) == (1.0, 0.0)
    swapped, _ = bench.win_rate([0.25, 1.0, 0.3, -2.0], [0.5, 1.0, 0.2, -1.0])
    assert swapped == pytest.approx(1 - rate)  # the base's win rate over the tuned model is the complement
    with pytest.raises(ValueError, match="two equal non-empty vectors"):
        bench.win_rate([1.0, 2.0], [1.0])


def test_sign_test_leaves_ties_out():
    from scipy.stats import binomtest

    tuned, base = [1.0] * 9 + [0.0] + [0.5] * 5, [0.0] * 9 + [1.0] + [0.5] * 5  # 9 wins, 1 loss, 5 ties
    assert bench.sign_test_p(tuned, base) == pytest.approx(binomtest(9, 10).pvalue)
    assert bench.sign_test_p([0.5, 0.5], [0.5, 0.5]) == 1.0


def test_bootstrap_set_win_rate_is_paired_and_complementary():
    base = [[1.0, 2.0], [3.0], [4.0, 5.0]]
    better = [[x + 10 for x in g] for g in base]
    assert bench.bootstrap_set_win_rate(sum, better, base, resamples=50) == 1.0
    assert bench.bootstrap_set_win_rate(sum, base, base, resamples=50) == 0.5  # the same draws: always a tie
    mixed = [[0.0], [3.0], [9.0, 5.0]]
    there = bench.bootstrap_set_win_rate(sum, mixed, base, resamples=100, seed=3)
    back = bench.bootstrap_set_win_rate(sum, base, mixed, resamples=100, seed=3)
    assert there + back == pytest.approx(1.0)


@pytest.mark.parametrize("run, message", [("verifier", "expected NAME=LORA_DIR"), ("base=/tmp", "is 'base'"),
                                          ("a=/no/such/dir", "LoRA directory not found")])
def test_bad_runs_are_one_line_errors(run, message, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--run", run])
    assert message in capsys.readouterr().err
