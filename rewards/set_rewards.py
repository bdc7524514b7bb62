"""DRAGON's distributional rewards from a config: per-song FAD (a clip against a reference distribution), and the
set rewards dataset FAD and Vendi (a whole set of generations).

Every reward here embeds each sample as a set of frames with an ``encoder``: ``"clap"`` or ``"vae"`` for audio
(:mod:`rewards.audio_frames`: fadtk windows of the CLAP audio tower, or the generator's VAE posterior), or an
image backbone name (``"toy"``, an open_clip or DINOv2 id: one CLS feature per image). Reference statistics
(mean and covariance in float64) come from ``references`` (``"toy"``: the toy world's renders of the split
``reference_prompts``; otherwise a folder of images or ``.wav`` clips) or, for the CLAP encoder, from text only:
``reference_captions`` (a toy split name, or a ``.txt`` file of one caption per line) embedded by the CLAP text
tower, DRAGON's cross-modal exemplar set. They are computed once, when the reward is built.

Arity: :class:`PerSongFrechetReward` scores each sample (``arity = "sample"``). :class:`SetReward` subclasses
(``arity = "set"``) define :meth:`SetReward.set_value` of a set; their per-sample :meth:`~SetReward.score` is
each sample's leave-one-out contribution ``r(B) - r(B without i)`` to its batch, and DRAGON
(``train.algorithm=dragon``) instead builds D+ / D- over the whole epoch's samples with ``dragon.set_selection``
(leave-one-out contributions or greedy selection), as the set rewards are not decomposed per sample.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import torch

from .audio_frames import build_audio_frames, reference_clips
from .backbones import build_backbone
from .base import Reward, RewardOutput
from .distributional import GaussianStats, frechet_distance, gaussian_stats, vendi_score
from .references import ReferenceImages
from .registry import register_reward

AUDIO_ENCODERS = ("clap", "vae")


class ImageFeatures:
    """One CLS feature per image of a frozen token backbone (``(1, d)`` frames per image)."""

    def __init__(self, backbone: str = "toy", device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.backbone = build_backbone(backbone).to(self.device).eval()

    @torch.no_grad()
    def frames(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``(N, 3, H, W)`` images in [0, 1] -> one ``(1, d)`` float64 tensor each."""
        feats = torch.cat([self.backbone(chunk.to(self.device))[0] for chunk in images.float().split(64)])
        return list(feats.double().cpu()[:, None])


def _captions(source: str) -> list[str]:
    path = Path(source).expanduser()
    if path.suffix == ".txt":
        if not path.is_file():
            raise FileNotFoundError(f"reference_captions file not found: {path}")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        from rewards.toyaudio.prompts import split

        lines = [spec.prompt for spec in split(source)]
    if not lines:
        raise ValueError(f"reference_captions {source!r} holds no captions")
    return lines


class FrameReward(Reward):
    """Shared set-up: the frame encoder (which fixes the modality) and the reference statistics."""

    #: whether the reward compares with reference statistics (built once, in ``__init__``)
    needs_reference: bool = True

    def __init__(self, encoder: str = "toy", references: str | None = "toy", reference_prompts: str = "train",
                 per_prompt: int = 4, seed: int = 0, reference_captions: str | None = None, ridge: float = 0.0,
                 sample_rate: int = 48_000, image_size: int | None = None, device: str | torch.device = "cpu",
                 **encoder_options) -> None:
        self.ridge, self.image_size = float(ridge), image_size
        if encoder in AUDIO_ENCODERS:
            self.modality, self.sample_rate = "audio", int(sample_rate)
            self.encoder = build_audio_frames(encoder, self.sample_rate, device=device, **encoder_options)
        else:
            if encoder_options:
                raise ValueError(f"image encoder {encoder!r} takes no options {sorted(encoder_options)}")
            if reference_captions is not None:
                raise ValueError("reference_captions (a text-only reference set) needs encoder 'clap'")
            self.modality, self.encoder = "image", ImageFeatures(encoder, device)
        self.reference: GaussianStats | None = None
        if self.needs_reference:
            self.reference = self._reference_stats(encoder, references, reference_prompts, per_prompt, seed,
                                                   reference_captions)

    def _reference_stats(self, encoder: str, references: str | None, reference_prompts: str, per_prompt: int,
                         seed: int, reference_captions: str | None) -> GaussianStats:
        if reference_captions is not None:
            if encoder != "clap":
                raise ValueError("reference_captions (a text-only reference set) needs encoder 'clap'")
            return gaussian_stats(self.encoder.text(_captions(reference_captions)), self.ridge,
                                  what=f"reference_captions {reference_captions!r}")
        if references is None:
            raise ValueError("set references (toy or a folder) or reference_captions")
        if self.modality == "audio":
            clips = reference_clips(references, self.sample_rate, reference_prompts, per_prompt, seed)
            frames = self.encoder.frames(clips)
        else:
            pool = ReferenceImages(references, per_prompt=per_prompt, heldout=0, seed=seed, image_size=self.image_size)
            if references == "toy":
                from rewards.toyworld.prompts import split

                images = torch.cat([pool.all_for(s.prompt) for s in split(reference_prompts)])
            else:
                images = pool.all_for("")
            frames = self.encoder.frames(images.float() / 255.0)
        return gaussian_stats(torch.cat(frames), self.ridge, what=f"references {references!r}")

    def frames(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Each sample's frame embeddings (float64): audio ``(N, T)`` waveforms or ``(N, 3, H, W)`` images."""
        return self.encoder.frames(batch)

    def media_frames(self, media) -> list[torch.Tensor]:
        """:meth:`frames` of media (or anything the reward's ``__call__`` accepts), e.g. a run's stored samples."""
        return self.frames(self.batch_tensor(media))


@register_reward("exemplar_fd")
class ExemplarFrechetReward(FrameReward):
    """DRAGON's exemplar-set reward for images: ``-FD`` between each image's embedding and the Gaussian of a
    reference image set in the same encoder's space.

    One image is a point mass (covariance 0), so its distance is ``||e - mu||^2 + tr(Sigma)``: the reference
    set's spread is a constant, and the reward ranks images by their distance to the exemplars' mean. The
    encoder is a frozen token backbone's CLS feature (``backbone``: ``"toy"``, an open_clip or DINOv2 id, see
    :func:`rewards.backbones.build_backbone`); the references are the toy renderer's scenes of every prompt of
    ``reference_prompts`` (a toy split), or a folder of images (:class:`rewards.references.ReferenceImages`,
    its whole pool). The reference statistics need more images than dimensions.
    """

    name = "exemplar_fd"

    def __init__(self, backbone: str = "toy", **options) -> None:
        if backbone in AUDIO_ENCODERS:
            raise ValueError(f"exemplar_fd embeds images; for audio use per_song_fd (encoder {backbone!r})")
        super().__init__(backbone, **options)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, d)`` float64 CLS features of ``(N, 3, H, W)`` images in [0, 1]."""
        return torch.cat(self.frames(images))

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        distances = [frechet_distance(gaussian_stats(e[None]), self.reference) for e in self.embed(images)]
        return RewardOutput(-torch.tensor(distances, dtype=torch.float32))


@register_reward("per_song_fd")
class PerSongFrechetReward(FrameReward):
    """Per-song FAD (DRAGON's instance-to-distribution reward): ``-FD`` between the Gaussian of one clip's frame
    embeddings and the reference statistics, as fadtk's ``score_individual``. A clip with fewer frames than
    dimensions has a singular covariance: pass ``ridge > 0`` (added to the clip's and the reference's
    covariance) or use a lower-dimensional encoder; otherwise building the statistics is an error naming the
    counts. Audio encoders only (an image is a single frame: use ``exemplar_fd``)."""

    name = "per_song_fd"

    def __init__(self, encoder: str = "clap", **options) -> None:
        if encoder not in AUDIO_ENCODERS:
            raise ValueError(f"per_song_fd embeds audio frames: encoder must be one of {AUDIO_ENCODERS}, got {encoder!r}")
        super().__init__(encoder, **options)

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        distances = [frechet_distance(gaussian_stats(f, self.ridge, what=f"clip {i}"), self.reference)
                     for i, f in enumerate(self.frames(images))]
        return RewardOutput(-torch.tensor(distances, dtype=torch.float32))


class SetReward(FrameReward):
    """A reward of a whole set of samples (``arity = "set"``): :meth:`set_value` of their frames."""

    arity = "set"

    @abstractmethod
    def set_value(self, frames: list[torch.Tensor]) -> float:
        """The reward of the set whose samples have these frame embeddings (higher is better)."""

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        """Each sample's leave-one-out contribution to the batch, ``r(B) - r(B without i)``."""
        frames = self.frames(images)
        whole = self.set_value(frames)
        contributions = [whole - self.set_value(frames[:i] + frames[i + 1:]) for i in range(len(frames))]
        return RewardOutput(torch.tensor(contributions, dtype=torch.float32), {"set_value": whole})


@register_reward("dataset_fd")
class DatasetFrechetReward(SetReward):
    """Dataset FAD / FID as a set reward: ``-FD`` between the Gaussian of every frame of the set (fadtk pools a
    set's frames) and the reference statistics; ``ridge`` regularises a set with fewer frames than dimensions."""

    name = "dataset_fd"

    def set_value(self, frames: list[torch.Tensor]) -> float:
        return -frechet_distance(gaussian_stats(torch.cat(frames), self.ridge, what="generated set"), self.reference)


@register_reward("vendi")
class VendiReward(SetReward):
    """The Vendi score of a set (DRAGON's diversity reward): one embedding per sample (the mean of its frames; an
    image's CLS feature), cosine kernel. Needs no reference set."""

    name = "vendi"
    needs_reference = False

    def set_value(self, frames: list[torch.Tensor]) -> float:
        return vendi_score(torch.stack([f.mean(0) for f in frames]))
