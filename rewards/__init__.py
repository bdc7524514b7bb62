"""genrl reward models: ``reward(images, prompts, metadata) -> RewardOutput(scores, info)``.

The package imports its modules on first use, so a light client (reading a config, the toy world in
:mod:`rewards.toyworld`) does not load torch; :func:`available_rewards` and :func:`build_reward` load
every reward module first, which registers them.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module defining it; a new reward module is listed here
_EXPORTS = {
    "AdversarialReward": "adversarial",
    "AestheticMLP": "aesthetic",
    "AestheticReward": "aesthetic",
    "ArtifactClassifierReward": "artifacts",
    "AudioAestheticReward": "audio_aesthetic",
    "ArtifactJudgeReward": "vlm_judge",
    "BrightnessReward": "brightness",
    "ClapReward": "clap",
    "ClipScoreReward": "clip_score",
    "DinoAdversarialReward": "adversarial",
    "DinoSimilarityReward": "dino_similarity",
    "Ensemble": "ensemble",
    "DatasetFrechetReward": "set_rewards",
    "ExemplarFrechetReward": "set_rewards",
    "FrameMeanReward": "frames",
    "HPSv2Reward": "hps",
    "ImageRewardReward": "imagereward",
    "InkBalanceReward": "ink_balance",
    "JpegCompressibilityReward": "jpeg",
    "LSCReward": "transforms",
    "Media": "media",
    "PARReward": "transforms",
    "PerSongFrechetReward": "set_rewards",
    "PickScoreAdversarialReward": "adversarial",
    "PiscesQualityReward": "pisces_rewards",
    "PiscesSemanticReward": "pisces_rewards",
    "PickScoreReward": "pickscore",
    "ReferenceImages": "references",
    "ReferenceRewards": "transforms",
    "ReferenceSimilarityReward": "reference_similarity",
    "RemoteReward": "remote",
    "Reward": "base",
    "SetReward": "set_rewards",
    "RewardOutput": "base",
    "MotionAlignmentReward": "motion_alignment",
    "ToyAudioVerifierReward": "toy_audio_verifier",
    "ToyEditVerifierReward": "toy_edit_verifier",
    "ToyVerifierReward": "toy_verifier",
    "ToyVideoVerifierReward": "toy_video_verifier",
    "VLMJudgeReward": "vlm_judge",
    "VendiReward": "set_rewards",
    "WeightedSum": "combine",
    "aggregate": "ensemble",
    "available_rewards": "registry",
    "build_reward": "registry",
    "classification_uncertainty": "ctrl_u",
    "frechet_distance": "distributional",
    "gaussian_stats": "distributional",
    "lsc": "transforms",
    "par": "transforms",
    "register_reward": "registry",
    "regression_uncertainty": "ctrl_u",
    "to_image_tensor": "base",
    "uncertainty_weighted_loss": "ctrl_u",
    "vendi_score": "distributional",
}

#: every module that registers rewards
REWARD_MODULES = tuple(sorted(set(_EXPORTS.values())))


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    try:  # a submodule, e.g. ``rewards.toy_verifier`` after a bare ``import rewards``
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "AdversarialReward",
    "AestheticMLP",
    "AestheticReward",
    "ArtifactClassifierReward",
    "ArtifactJudgeReward",
    "BrightnessReward",
    "ClapReward",
    "ClipScoreReward",
    "DatasetFrechetReward",
    "DinoAdversarialReward",
    "DinoSimilarityReward",
    "Ensemble",
    "ExemplarFrechetReward",
    "HPSv2Reward",
    "ImageRewardReward",
    "InkBalanceReward",
    "JpegCompressibilityReward",
    "LSCReward",
    "MotionAlignmentReward",
    "PARReward",
    "PerSongFrechetReward",
    "PickScoreAdversarialReward",
    "PickScoreReward",
    "ReferenceImages",
    "ReferenceRewards",
    "ReferenceSimilarityReward",
    "RemoteReward",
    "Reward",
    "RewardOutput",
    "SetReward",
    "ToyAudioVerifierReward",
    "ToyEditVerifierReward",
    "ToyVerifierReward",
    "VLMJudgeReward",
    "VendiReward",
    "WeightedSum",
    "aggregate",
    "available_rewards",
    "build_reward",
    "classification_uncertainty",
    "lsc",
    "par",
    "register_reward",
    "regression_uncertainty",
    "to_image_tensor",
    "uncertainty_weighted_loss",
]
