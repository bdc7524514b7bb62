"""Generated media with what it takes to play it back: images, videos and audio in one type.

A model family's ``decode`` returns a float tensor; :class:`Media` names its kind and its playback rate and
converts it to the compact CPU copy a run keeps after scoring (8-bit pixels, 16-bit PCM), so an epoch of video
or audio never sits on the accelerator between sampling and the update.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

#: the tensor layout of each kind (N samples first); images and videos are in [0, 1], audio in [-1, 1]
LAYOUTS = {"image": "(N, 3, H, W)", "video": "(N, F, 3, H, W)", "audio": "(N, channels, samples)"}
_NDIM = {"image": 4, "video": 5, "audio": 3}
_STORED_DTYPE = {"image": torch.uint8, "video": torch.uint8, "audio": torch.int16}
_SCALE = {"image": 255.0, "video": 255.0, "audio": 32767.0}


@dataclass(frozen=True)
class Media:
    """A batch of media: ``tensor`` in the layout of :data:`LAYOUTS`, float (in the kind's range) or quantised
    (``uint8`` pixels, ``int16`` PCM); ``fps`` for video and ``sample_rate`` for audio."""

    tensor: torch.Tensor
    kind: str
    fps: float | None = None
    sample_rate: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in LAYOUTS:
            raise ValueError(f"unknown media kind {self.kind!r}; expected one of {sorted(LAYOUTS)}")
        if self.tensor.ndim != _NDIM[self.kind]:
            raise ValueError(f"{self.kind} media must be {LAYOUTS[self.kind]}, got shape {tuple(self.tensor.shape)}")
        if self.kind == "video" and not (self.fps and self.fps > 0):
            raise ValueError(f"video media needs a positive fps, got {self.fps}")
        if self.kind == "audio" and not (self.sample_rate and self.sample_rate > 0):
            raise ValueError(f"audio media needs a positive sample_rate, got {self.sample_rate}")

    def __len__(self) -> int:
        return self.tensor.shape[0]

    @property
    def quantized(self) -> bool:
        """Whether the tensor holds the stored integer form rather than floats."""
        return not self.tensor.is_floating_point()

    def select(self, index: torch.Tensor | slice | Sequence[int]) -> Media:
        """The media of a subset of the batch."""
        return replace(self, tensor=self.tensor[index])

    def stored(self) -> Media:
        """A CPU copy in the stored form: pixels rounded to ``uint8``, audio to ``int16`` PCM (clamped to the range)."""
        if self.quantized:
            return replace(self, tensor=self.tensor.detach().cpu())
        low = -1.0 if self.kind == "audio" else 0.0
        scaled = (self.tensor.detach().float().clamp(low, 1.0) * _SCALE[self.kind]).round()
        return replace(self, tensor=scaled.to(_STORED_DTYPE[self.kind]).cpu())

    def as_float(self, device: torch.device | str | None = None) -> Media:
        """float32 in the kind's range (the inverse of :meth:`stored` up to its rounding), on ``device``."""
        tensor = self.tensor if device is None else self.tensor.to(device)
        if self.quantized:
            tensor = tensor.float() / _SCALE[self.kind]
        return replace(self, tensor=tensor.float())

    @classmethod
    def cat(cls, parts: Sequence[Media]) -> Media:
        """Batches of one kind and rate, joined."""
        if not parts:
            raise ValueError("no media to join")
        first = parts[0]
        for part in parts[1:]:
            if (part.kind, part.fps, part.sample_rate) != (first.kind, first.fps, first.sample_rate):
                raise ValueError(f"cannot join {part.kind} media at {part.fps or part.sample_rate} with "
                                 f"{first.kind} media at {first.fps or first.sample_rate}")
        stored = any(p.quantized for p in parts)
        tensors = [(p.stored() if stored else p).tensor.to(first.tensor.device) for p in parts]
        return replace(first, tensor=torch.cat(tensors))


def empty_tensor(kind: str) -> torch.Tensor:
    """A tensor of no samples in ``kind``'s layout: what a model family's media and a reward's
    :meth:`~rewards.base.Reward.media_tensor` check can be tried on before anything is generated."""
    if kind not in LAYOUTS:
        raise ValueError(f"unknown media kind {kind!r}; expected one of {sorted(LAYOUTS)}")
    return torch.zeros({"image": (0, 3, 1, 1), "video": (0, 1, 3, 1, 1), "audio": (0, 1, 1)}[kind])
