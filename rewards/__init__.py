"""genrl reward models: ``reward(images, prompts, metadata) -> RewardOutput(scores, info)``."""

from .adversarial import AdversarialReward, DinoAdversarialReward, PickScoreAdversarialReward
from .aesthetic import AestheticMLP, AestheticReward
from .artifacts import ArtifactClassifierReward
from .base import Reward, RewardOutput, to_image_tensor
from .brightness import BrightnessReward
from .clap import ClapReward
from .clip_score import ClipScoreReward
from .combine import WeightedSum
from .ctrl_u import classification_uncertainty, regression_uncertainty, uncertainty_weighted_loss
from .dino_similarity import DinoSimilarityReward
from .ensemble import Ensemble, aggregate
from .hps import HPSv2Reward
from .imagereward import ImageRewardReward
from .ink_balance import InkBalanceReward
from .jpeg import JpegCompressibilityReward
from .pickscore import PickScoreReward
from .reference_similarity import ReferenceSimilarityReward
from .references import ReferenceImages
from .registry import available_rewards, build_reward, register_reward
from .remote import RemoteReward
from .toy_verifier import ToyVerifierReward
from .transforms import LSCReward, PARReward, ReferenceRewards, lsc, par
from .vlm_judge import ArtifactJudgeReward, VLMJudgeReward

__all__ = [
    "AdversarialReward",
    "AestheticMLP",
    "AestheticReward",
    "ArtifactClassifierReward",
    "ArtifactJudgeReward",
    "BrightnessReward",
    "ClapReward",
    "ClipScoreReward",
    "DinoAdversarialReward",
    "DinoSimilarityReward",
    "Ensemble",
    "HPSv2Reward",
    "ImageRewardReward",
    "InkBalanceReward",
    "JpegCompressibilityReward",
    "LSCReward",
    "PARReward",
    "PickScoreAdversarialReward",
    "PickScoreReward",
    "ReferenceImages",
    "ReferenceRewards",
    "ReferenceSimilarityReward",
    "RemoteReward",
    "Reward",
    "RewardOutput",
    "ToyVerifierReward",
    "VLMJudgeReward",
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
