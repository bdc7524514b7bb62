"""The toy edit world: (source, instruction, target) triples of the image world's shapes (``world``), its
fixed RL splits (``splits``) and an analytic edit verifier (``verifier``). numpy and scipy only, like
:mod:`rewards.toyworld`."""

from .splits import edit_split, sample_edits
from .verifier import edit_requirements, verify_edit
from .world import (
                    DIRECTIONS,
                    EDIT_FAMILIES,
                    GROWTH,
                    MOTION_FAMILIES,
                    MOVE_DISTANCE,
                    EditSpec,
                    edit_vocabulary,
                    exact_flow,
                    render_pair,
                    sample_edit,
)

__all__ = ["DIRECTIONS", "EDIT_FAMILIES", "GROWTH", "MOTION_FAMILIES", "MOVE_DISTANCE", "EditSpec", "edit_requirements",
           "edit_split", "edit_vocabulary", "exact_flow", "render_pair", "sample_edit", "sample_edits", "verify_edit"]
