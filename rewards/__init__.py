"""genrl reward models: ``reward(images, prompts, metadata) -> RewardOutput(scores, info)``."""

from .base import Reward, RewardOutput, to_image_tensor
from .registry import available_rewards, build_reward, register_reward
from .clip_score import ClipScoreReward
from .combine import WeightedSum
from .toy_verifier import ToyVerifierReward

__all__ = ["ClipScoreReward", "Reward", "RewardOutput", "ToyVerifierReward", "WeightedSum", "available_rewards", "build_reward", "register_reward",
           "to_image_tensor"]
