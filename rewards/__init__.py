"""genrl reward models: ``reward(images, prompts, metadata) -> RewardOutput(scores, info)``."""

from .base import Reward, RewardOutput, to_image_tensor
from .registry import available_rewards, build_reward, register_reward
from .clip_score import ClipScoreReward
from .combine import WeightedSum
from .ctrl_u import classification_uncertainty, regression_uncertainty, uncertainty_weighted_loss
from .ensemble import Ensemble, aggregate
from .jpeg import JpegCompressibilityReward
from .pickscore import PickScoreReward
from .transforms import LSCReward, PARReward, ReferenceRewards, lsc, par
from .toy_verifier import ToyVerifierReward

__all__ = [
    "ClipScoreReward", "Ensemble", "LSCReward", "PARReward", "ReferenceRewards", "Reward", "RewardOutput",
    "JpegCompressibilityReward", "PickScoreReward", "ToyVerifierReward", "WeightedSum", "aggregate", "available_rewards", "build_reward", "lsc", "par",
    "classification_uncertainty", "regression_uncertainty", "register_reward", "to_image_tensor",
    "uncertainty_weighted_loss",
]
