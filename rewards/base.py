"""The reward interface: media, prompts and per-sample metadata in; one score per sample and an info dict out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from .media import Media


@dataclass
class RewardOutput:
    """Scores (float tensor of shape ``(N,)``) and extra per-sample or scalar diagnostics."""

    scores: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


class Reward(ABC):
    """Base class of every reward.

    Subclasses set the class attributes that describe them and implement :meth:`score`.
    ``differentiable`` says whether gradients reach the pixels; ``required_metadata`` lists the
    per-sample metadata keys :meth:`score` reads.
    """

    name: str = "reward"
    #: what the reward scores: images ``(N, 3, H, W)`` in [0, 1], videos ``(N, F, 3, H, W)`` in [0, 1] or mono
    #: waveforms ``(N, T)``
    modality: Literal["image", "video", "audio"] = "image"
    differentiable: bool = False
    #: "sample": one score per sample; "set": the reward of a whole set (:class:`rewards.set_rewards.SetReward`)
    arity: Literal["sample", "set"] = "sample"
    required_metadata: tuple[str, ...] = ()

    def __call__(self, images: Any, prompts: Sequence[str], metadata: Sequence[dict] | None = None) -> RewardOutput:
        """Score a batch; ``images`` are PIL images, uint8/float arrays or a tensor (see :func:`to_image_tensor`),
        waveforms for audio rewards (see :func:`to_audio_tensor`), or :class:`~rewards.media.Media` of the
        reward's modality (its stored 8/16-bit form included; audio at the reward's ``sample_rate``)."""
        batch = self.batch_tensor(images)
        if len(prompts) != batch.shape[0]:
            raise ValueError(f"reward {self.name!r}: got {batch.shape[0]} images but {len(prompts)} prompts")
        metadata = list(metadata) if metadata is not None else [{} for _ in prompts]
        if len(metadata) != len(prompts):
            raise ValueError(f"reward {self.name!r}: got {len(prompts)} prompts but {len(metadata)} metadata entries")
        for i, meta in enumerate(metadata):
            missing = [k for k in self.required_metadata if k not in meta]
            if missing:
                raise KeyError(f"reward {self.name!r}: sample {i} lacks metadata {missing}")
        out = self.score(batch, list(prompts), metadata)
        if out.scores.shape != (batch.shape[0],):
            raise RuntimeError(f"reward {self.name!r} returned scores of shape {tuple(out.scores.shape)}, "
                               f"expected ({batch.shape[0]},)")
        return out

    def batch_tensor(self, images: Any) -> torch.Tensor:
        """What :meth:`score` takes, from anything :meth:`__call__` accepts (media of the reward's modality)."""
        if isinstance(images, Media):
            images = self.media_tensor(images)
        convert = {"audio": to_audio_tensor, "video": to_video_tensor}.get(self.modality, to_image_tensor)
        return convert(images)

    def media_tensor(self, media: Media) -> torch.Tensor:
        """The float tensor of ``media`` for this reward; ``ValueError`` when its kind is not the reward's
        modality, or its sample rate not the reward's ``sample_rate`` (an option of the audio rewards)."""
        if media.kind != self.modality:
            raise ValueError(f"reward {self.name!r} scores {self.modality}, not {media.kind}")
        rate = getattr(self, "sample_rate", None)
        if media.kind == "audio" and rate is not None and int(rate) != int(media.sample_rate):
            raise ValueError(f"reward {self.name!r} expects audio at {rate} Hz (its sample_rate option); the media "
                             f"is at {media.sample_rate} Hz")
        return media.as_float().tensor

    @abstractmethod
    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        """Score ``images`` (float tensor ``(N, 3, H, W)`` in [0, 1]; ``(N, T)`` waveforms for audio rewards)."""


def common_modality(owner: str, parts: Sequence[Reward]) -> str:
    """The one modality of rewards combined into ``owner``; ``ValueError`` naming the mix otherwise."""
    kinds = sorted({part.modality for part in parts})
    if len(kinds) > 1:
        raise ValueError(f"{owner} combines rewards of different modalities: "
                         + ", ".join(f"{part.name} ({part.modality})" for part in parts))
    return kinds[0] if kinds else "image"


def check_media_for_all(parts: Sequence[Reward], media: Media) -> torch.Tensor:
    """:meth:`Reward.media_tensor` of ``media`` checked against every combined reward."""
    for part in parts:
        part.media_tensor(media)
    return media.as_float().tensor


def to_video_tensor(videos: Any) -> torch.Tensor:
    """A ``(N, F, 3, H, W)`` tensor/array (uint8, or float in [0, 1]) as floats in [0, 1]; a float tensor passes
    through, keeping gradients."""
    if isinstance(videos, np.ndarray):
        videos = torch.from_numpy(np.ascontiguousarray(videos))
    if not isinstance(videos, torch.Tensor) or videos.ndim != 5 or videos.shape[2] != 3:
        shape = tuple(videos.shape) if hasattr(videos, "shape") else type(videos).__name__
        raise ValueError(f"expected videos of shape (N, F, 3, H, W), got {shape}")
    return videos if videos.is_floating_point() else videos.float() / 255.0


def to_image_tensor(images: Any) -> torch.Tensor:
    """Convert PIL images, ``(N, H, W, 3)`` arrays (uint8 or float in [0, 1]) or tensors to ``(N, 3, H, W)`` floats in [0, 1].

    A float tensor of shape ``(N, 3, H, W)`` is passed through unchanged, so gradients survive.
    """
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"expected a 4-D image tensor, got shape {tuple(images.shape)}")
        if images.shape[1] != 3 and images.shape[-1] == 3:
            images = images.permute(0, 3, 1, 2)
        return images.float() / 255.0 if images.dtype == torch.uint8 else images
    if isinstance(images, np.ndarray):
        return to_image_tensor(torch.from_numpy(np.ascontiguousarray(images)))
    arrays = [np.asarray(im.convert("RGB") if hasattr(im, "convert") else im) for im in images]
    if not arrays:
        raise ValueError("got an empty batch of images")
    return to_image_tensor(np.stack(arrays))


def to_audio_tensor(audio: Any) -> torch.Tensor:
    """Convert a ``(N, T)`` or ``(N, C, T)`` tensor/array, or a list of equal-length 1-D/2-D waveforms, to
    float mono ``(N, T)`` (channels averaged). A float ``(N, T)`` tensor passes through, keeping gradients."""
    if isinstance(audio, np.ndarray):
        audio = torch.from_numpy(np.ascontiguousarray(audio))
    if not isinstance(audio, torch.Tensor):
        items = [torch.as_tensor(np.asarray(a)) if not isinstance(a, torch.Tensor) else a for a in audio]
        if not items:
            raise ValueError("got an empty batch of waveforms")
        lengths = {a.shape[-1] for a in items}
        if len(lengths) > 1:
            raise ValueError(f"waveforms differ in length {sorted(lengths)[:4]}; pad or crop them to one length")
        audio = torch.stack(items)
    if audio.ndim == 3:
        audio = audio.float().mean(1)
    if audio.ndim != 2:
        raise ValueError(f"expected waveforms of shape (N, T) or (N, C, T), got {tuple(audio.shape)}")
    return audio if audio.is_floating_point() else audio.float()


def projected_features(output: Any) -> torch.Tensor:
    """Embeddings from a transformers ``get_*_features`` call: a tensor in transformers 4, ``pooler_output`` in 5."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output
