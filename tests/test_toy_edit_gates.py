import importlib.util
import random
from pathlib import Path

from rewards.toyedit import EDIT_FAMILIES, render_pair, sample_edit

_spec = importlib.util.spec_from_file_location("toy_edit_gates", Path(__file__).parent.parent / "bench" / "toy_edit_gates.py")
gates = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gates)


def test_every_requirement_of_every_family_has_a_kind_and_renders_hold_them_all():
    rng = random.Random(0)
    specs = [sample_edit(f, rng) for f in EDIT_FAMILIES for _ in range(10)]
    pairs = [render_pair(s) for s in specs]
    rates = gates.requirement_rates([s for s, _ in pairs], [t for _, t in pairs], specs)
    assert set(rates) == {kind for _, kind in gates.REQUIREMENT_KINDS} and all(v == 1.0 for v in rates.values())
    unedited = gates.requirement_rates([s for s, _ in pairs], [s for s, _ in pairs], specs)
    assert unedited["others kept"] == unedited["nothing added"] == 1.0 and unedited["moved the right way"] == 0.0
