"""Optical flow estimators for motion rewards: ``estimate(source, target) -> (N, 2, H, W)`` flow in pixels.

Every estimator takes two batches of images ``(N, 3, H, W)`` in [0, 1] and returns the forward flow
(where each source pixel goes in the target; channel 0 is dx, channel 1 dy), with no gradient:

* ``farneback`` and ``dis``: OpenCV's dense estimators (weights-free; the ``flow`` extra installs
  ``opencv-python-headless``). Farneback uses ``(0.5, 3, 15, 3, 5, 1.2, 0)``;
* ``raft_small`` / ``raft_large``: torchvision's RAFT. ``weights`` is ``None`` (a random model, for tests),
  a torchvision weights name (``"C_T_V2"``; read from the torch hub cache with ``weights_only=True``, never
  downloaded here) or a local ``.pth`` / ``.safetensors`` state dict. Images are upsampled so each side is a
  multiple of 8 and at least :data:`RAFT_MIN_SIDE` (RAFT's correlation pyramid needs room), and the flow is
  scaled back;
* ``toy_objects``: the toy world's detector-based flow (no weights): each object of the source, found again
  in the target by its shape and colour, moves all its pixels by its box's displacement and scale. Exact on
  the toy renderer's scenes, it is the toy edit world's reference estimator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .optional import require

#: RAFT sees images of at least this side (upsampled): at 1/8 resolution its 4-level correlation pyramid needs 16.
RAFT_MIN_SIDE = 128
FARNEBACK_PARAMS = (0.5, 3, 15, 3, 5, 1.2, 0)


class FlowEstimator(ABC):
    """Dense forward optical flow between two image batches."""

    name = "flow"

    @torch.no_grad()
    def __call__(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if source.ndim != 4 or source.shape[1] != 3 or source.shape != target.shape:
            raise ValueError(f"flow estimator {self.name!r}: source and target must both be (N, 3, H, W), got "
                             f"{tuple(source.shape)} and {tuple(target.shape)}")
        return self.estimate(source.detach().float().clamp(0, 1), target.detach().float().clamp(0, 1)).float()

    @abstractmethod
    def estimate(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(N, 2, H, W)`` flow in pixels of ``source`` -> ``target`` (both ``(N, 3, H, W)`` in [0, 1])."""


def _gray_uint8(images: torch.Tensor) -> list[np.ndarray]:
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    gray = (images.cpu() * weights).sum(1).mul(255).round().clamp(0, 255).to(torch.uint8)
    return [g.numpy() for g in gray]


class _OpenCVFlow(FlowEstimator):
    def __init__(self) -> None:
        self.cv2 = require("cv2")

    def estimate(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        flows = [self._pair(a, b) for a, b in zip(_gray_uint8(source), _gray_uint8(target))]
        return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).to(source.device)

    @abstractmethod
    def _pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray: ...


class FarnebackFlow(_OpenCVFlow):
    """OpenCV Farneback dense flow on grey images."""

    name = "farneback"

    def _pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.cv2.calcOpticalFlowFarneback(a, b, None, *FARNEBACK_PARAMS)


class DISFlow(_OpenCVFlow):
    """OpenCV DIS (dense inverse search) flow on grey images, the ``medium`` preset."""

    name = "dis"

    def __init__(self) -> None:
        super().__init__()
        self.dis = self.cv2.DISOpticalFlow_create(self.cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def _pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.dis.calc(a, b, None)


class RAFTFlow(FlowEstimator):
    """torchvision RAFT (small or large); see the module docstring for ``weights``."""

    def __init__(self, size: str = "small", weights: str | None = None, device: str | torch.device = "cpu",
                 iterations: int = 12) -> None:
        from torchvision.models import optical_flow

        if size not in ("small", "large"):
            raise ValueError(f"RAFT size must be 'small' or 'large', got {size!r}")
        self.name = f"raft_{size}"
        self.device, self.iterations = torch.device(device), iterations
        self.model = getattr(optical_flow, f"raft_{size}")(weights=None).eval().to(self.device)
        if weights is not None:
            self.model.load_state_dict(self._state_dict(size, weights, optical_flow))

    def _state_dict(self, size: str, weights: str, optical_flow) -> dict:
        from .weight_files import load_weight_file

        path = Path(weights).expanduser()
        if path.suffix in (".pth", ".pt", ".safetensors"):
            return load_weight_file(path, self.name, hint="pass a RAFT state dict, or a torchvision weights name")
        enum = getattr(optical_flow, f"Raft_{size.capitalize()}_Weights")
        try:
            entry = enum[weights]
        except KeyError:
            raise ValueError(f"{self.name}: unknown weights {weights!r}; expected a file or one of "
                             f"{[w.name for w in enum]}") from None
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.url).name
        if not cached.is_file():
            raise FileNotFoundError(f"{self.name}: weights {weights!r} are not in the torch hub cache ({cached}); "
                                    f"download {entry.url} there, or pass the file's path")
        return torch.load(cached, map_location="cpu", weights_only=True)

    def estimate(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        h, w = source.shape[-2:]
        scale = max(1.0, RAFT_MIN_SIDE / min(h, w))
        hh, ww = (int(np.ceil(h * scale / 8)) * 8, int(np.ceil(w * scale / 8)) * 8)

        def prepare(x: torch.Tensor) -> torch.Tensor:  # RAFT's transforms: [0, 1] -> [-1, 1]
            return F.interpolate(x, size=(hh, ww), mode="bilinear", align_corners=False).mul(2).sub(1).to(self.device)

        flow = self.model(prepare(source), prepare(target), num_flow_updates=self.iterations)[-1]
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        return flow * torch.tensor([w / ww, h / hh], device=flow.device).view(1, 2, 1, 1)


class ToyObjectFlow(FlowEstimator):
    """The toy world's detector-based flow (see the module docstring); 32 x 32 toy images only."""

    name = "toy_objects"

    def estimate(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from rewards.toyworld.verifier import _to_uint8_hwc, detect, label_colors
        from rewards.toyworld.world import COLORS

        out = torch.zeros(source.shape[0], 2, *source.shape[2:])
        colors = list(COLORS)
        for i, (a, b) in enumerate(zip(source.cpu().numpy(), target.cpu().numpy())):
            before, after = detect(a), detect(b)
            labels = label_colors(_to_uint8_hwc(a))
            for d in before:
                match = [e for e in after if e.shape == d.shape and e.color == d.color]
                if not match:
                    continue
                e = min(match, key=lambda m: np.hypot(m.center[0] - d.center[0], m.center[1] - d.center[1]))
                scale = np.sqrt(e.area / d.area)
                ys, xs = np.nonzero(labels == colors.index(d.color))
                near = (np.abs(xs + 0.5 - d.center[0]) <= d.area ** 0.5) & (np.abs(ys + 0.5 - d.center[1]) <= d.area ** 0.5)
                ys, xs = ys[near], xs[near]
                px, py = xs + 0.5, ys + 0.5
                out[i, 0, ys, xs] = torch.from_numpy((e.center[0] + (px - d.center[0]) * scale - px).astype(np.float32))
                out[i, 1, ys, xs] = torch.from_numpy((e.center[1] + (py - d.center[1]) * scale - py).astype(np.float32))
        return out.to(source.device)


FLOW_ESTIMATORS = ("farneback", "dis", "raft_small", "raft_large", "toy_objects")


def build_flow_estimator(name: str, weights: str | None = None, device: str | torch.device = "cpu") -> FlowEstimator:
    """The estimator called ``name`` (one of :data:`FLOW_ESTIMATORS`)."""
    if name == "farneback":
        return FarnebackFlow()
    if name == "dis":
        return DISFlow()
    if name in ("raft_small", "raft_large"):
        return RAFTFlow(name.split("_")[1], weights=weights, device=device)
    if name == "toy_objects":
        return ToyObjectFlow()
    raise ValueError(f"unknown flow estimator {name!r}; expected one of {FLOW_ESTIMATORS}")
