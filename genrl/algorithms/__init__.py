"""Post-training algorithms, registered by name; each is a small object the one trainer calls."""

from .adv_grpo import AdvGRPO
from .advantages import Advantages, group_advantages
from .base import Algorithm, LossContext, RolloutBatch, TrainerContext, build_algorithm, register_algorithm
from .ctrl_u import CtrlU
from .diffusion_nft import DiffusionNFT
from .dragon import Dragon
from .flow_grpo import FlowGRPO
from .reward_backprop import RewardBackprop
from .sampler import KRepeatSampler, family_weights
from .tp_grpo import TPGRPO

__all__ = [
           "TPGRPO",
           "AdvGRPO",
           "Advantages",
           "Algorithm",
           "CtrlU",
           "DiffusionNFT",
           "Dragon",
           "FlowGRPO",
           "KRepeatSampler",
           "LossContext",
           "RewardBackprop",
           "RolloutBatch",
           "TrainerContext",
           "build_algorithm",
           "family_weights",
           "group_advantages",
           "register_algorithm",
]
