"""MotionNFT's motion-alignment reward: does the edit move things the way the ground-truth edit does?

With ``F_p`` the optical flow input -> model edit and ``F_g`` input -> ground-truth edit, both divided by the
image diagonal ``sqrt(H^2 + W^2)``:

* ``L_vec = mean_{h,w,c} (|F_p - F_g| + 1e-6) ** 0.4`` (a robust L_q, q = 0.4);
* ``L_dir = sum_M (1 - cos(F_p, F_g)) / 2 / max(|M|, 1)`` over the moving pixels ``M = {|F_g| > 0.002}``;
* ``L_mov = max(0, 0.01 + 0.5 mean|F_g| - mean|F_p|)`` (an edit that does not move is penalised);
* ``L = 0.7 L_vec + 0.2 L_dir + 0.1 L_mov``, normalised ``n = clip((L - L*) / (1 - L*), 0, 1)`` with the
  perfect match's ``L* = (1e-6) ** 0.4``, and quantised to six levels: ``R = round(5 (1 - n)) / 5``.

All three images are resized to the edited image's size first (bilinear), as the reference scorer does. The
reward reads each sample's source image and ground-truth edit from its metadata (``image`` and ``target``: a
``(3, H, W)`` tensor in [0, 1], an array, a PIL image or a file path), or, with ``ground_truth="exact"``, the
toy edit world's renderer flow of its ``spec`` in place of ``F_g``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base import Reward, RewardOutput
from .optical_flow import build_flow_estimator
from .registry import register_reward

Q = 0.4
EPS = 1e-6
MOVING_THRESHOLD = 0.002
HINGE_MARGIN = 0.01
WEIGHTS = (0.7, 0.2, 0.1)
LEVELS = 5
#: The combined loss of identical flows: the floor the normalisation subtracts.
PERFECT_LOSS = EPS ** Q


def motion_terms(pred_flow: torch.Tensor, gt_flow: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-sample terms and reward of ``(N, 2, H, W)`` flows in pixels (see the module docstring)."""
    if pred_flow.shape != gt_flow.shape or pred_flow.ndim != 4 or pred_flow.shape[1] != 2:
        raise ValueError(f"flows must both be (N, 2, H, W), got {tuple(pred_flow.shape)} and {tuple(gt_flow.shape)}")
    h, w = pred_flow.shape[-2:]
    diagonal = math.sqrt(h * h + w * w)
    fp, fg = pred_flow.double() / diagonal, gt_flow.double() / diagonal
    vec = ((fp - fg).abs() + EPS).pow(Q).mean(dim=(1, 2, 3))
    moving = fg.norm(dim=1) > MOVING_THRESHOLD
    cos = F.cosine_similarity(fp, fg, dim=1)
    direction = (0.5 * (1 - cos) * moving).sum(dim=(1, 2)) / moving.sum(dim=(1, 2)).clamp(min=1)
    movement = (HINGE_MARGIN + 0.5 * fg.norm(dim=1).mean(dim=(1, 2)) - fp.norm(dim=1).mean(dim=(1, 2))).clamp(min=0)
    loss = WEIGHTS[0] * vec + WEIGHTS[1] * direction + WEIGHTS[2] * movement
    normalised = ((loss - PERFECT_LOSS) / (1 - PERFECT_LOSS)).clamp(0, 1)
    reward = torch.round(LEVELS * (1 - normalised)) / LEVELS
    return {"vector": vec, "direction": direction, "movement": movement, "loss": loss, "reward": reward.float()}


def motion_alignment(pred_flow: torch.Tensor, gt_flow: torch.Tensor) -> torch.Tensor:
    """The six-level motion-alignment reward ``(N,)`` of predicted and ground-truth flows ``(N, 2, H, W)``."""
    return motion_terms(pred_flow, gt_flow)["reward"]


def image_from_metadata(value: Any, what: str, index: int) -> torch.Tensor:
    """A ``(3, H, W)`` float image in [0, 1] from a tensor, array, PIL image or file path in a sample's metadata."""
    from PIL import Image

    if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
        try:
            value = Image.open(value).convert("RGB")
        except OSError as err:
            raise ValueError(f"sample {index}: cannot read its {what} image {str(value)!r} ({err})") from err
    if isinstance(value, Image.Image):
        value = np.asarray(value.convert("RGB"))
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.array(value))  # a copy: PIL arrays are read-only
        if value.ndim == 3 and value.shape[-1] == 3 and value.shape[0] != 3:
            value = value.permute(2, 0, 1)
    if not isinstance(value, torch.Tensor) or value.ndim != 3 or value.shape[0] != 3:
        shape = tuple(value.shape) if hasattr(value, "shape") else type(value).__name__
        raise ValueError(f"sample {index}: its {what} must be a (3, H, W) image, got {shape}")
    return value.float() / 255.0 if value.dtype == torch.uint8 else value.float()


def _resized(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == size:
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


@register_reward("motion_alignment")
class MotionAlignmentReward(Reward):
    """The motion-alignment reward of edits (module docstring); ``flow`` names the estimator
    (:data:`rewards.optical_flow.FLOW_ESTIMATORS`), ``flow_weights`` its weights (RAFT)."""

    name = "motion_alignment"
    required_metadata = ("image",)

    def __init__(self, flow: str = "farneback", flow_weights: str | None = None, ground_truth: str = "estimate",
                 device: str | torch.device = "cpu") -> None:
        if ground_truth not in ("estimate", "exact"):
            raise ValueError(f"motion_alignment ground_truth must be 'estimate' or 'exact', got {ground_truth!r}")
        self.estimator = build_flow_estimator(flow, weights=flow_weights, device=device)
        self.ground_truth = ground_truth

    def _sources_and_truths(self, metadata: list[dict], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        sources, targets = [], []
        for i, meta in enumerate(metadata):
            source = image_from_metadata(meta["image"], "source", i)
            if self.ground_truth == "exact":
                if "spec" not in meta:
                    raise ValueError(f"motion_alignment: ground_truth='exact' needs a toy edit spec; sample {i} has none")
            else:
                if "target" not in meta:
                    raise KeyError(f"motion_alignment: sample {i} has no ground-truth edit (metadata 'target')")
                target = image_from_metadata(meta["target"], "target", i)
                if target.shape != source.shape:
                    raise ValueError(f"motion_alignment: sample {i}: source {tuple(source.shape[1:])} and ground-truth "
                                     f"target {tuple(target.shape[1:])} differ in size")
                targets.append(_resized(target, size))
            sources.append(_resized(source, size))
        return torch.stack(sources), (torch.stack(targets) if targets else None)

    def _exact_flows(self, metadata: list[dict], size: tuple[int, int]) -> torch.Tensor:
        from rewards.toyedit.world import as_edit_spec, exact_flow

        flows = []
        for i, meta in enumerate(metadata):
            flow = torch.from_numpy(exact_flow(as_edit_spec(meta["spec"], i))).permute(2, 0, 1)
            h, w = flow.shape[-2:]
            if (h, w) != size:  # pixel displacements scale with the image
                flow = _resized(flow, size) * torch.tensor([size[1] / w, size[0] / h]).view(2, 1, 1)
            flows.append(flow)
        return torch.stack(flows)

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        size = tuple(images.shape[-2:])
        sources, targets = self._sources_and_truths(metadata, size)
        edits = images.detach().float().clamp(0, 1).cpu()
        pred = self.estimator(sources, edits)
        truth = self._exact_flows(metadata, size) if targets is None else self.estimator(sources, targets)
        terms = motion_terms(pred.cpu(), truth.cpu())
        info = {k: terms[k].float().tolist() for k in ("vector", "direction", "movement", "loss")}
        return RewardOutput(terms["reward"], info)
