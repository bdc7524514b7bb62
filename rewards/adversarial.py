"""Rewards that learn during training: Adv-GRPO's discriminators (see ``reference/adv-grpo.md``).

Reference images are the positives and the generator's current samples the negatives. The
trainer's algorithm (``genrl.algorithms.adv_grpo``) decides when :meth:`AdversarialReward.update`
runs; between updates the reward is frozen (eval mode, no gradients) like any other reward.

- :class:`DinoAdversarialReward`: a frozen DINOv2 (or toy) backbone and an MLP head shared by the
  CLS and patch tokens; ``r = 0.7 h(cls) + 0.3 mean_j h(patch_j)``; hinge loss. Features are
  L2-normalised both when training and when scoring (the released code trains on raw features
  and scores on normalised ones; this class uses one convention for both).
- :class:`PickScoreAdversarialReward`: PickScore whose last vision block(s) are fine-tuned with the
  pairwise loss ``softplus(s_gen - s_ref)`` over (generated, reference) pairs of the same prompt.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import build_backbone
from .base import Reward, RewardOutput
from .pickscore import PICKSCORE_MODEL, PICKSCORE_PROCESSOR, PickScoreReward
from .registry import register_reward

GradReducer = Callable[[torch.Tensor], torch.Tensor]


class AdversarialReward(Reward):
    """A reward with a trainable discriminator; its weights and optimizer state are checkpointed."""

    #: "hinge" (real vs fake around 0) or "pairwise" (reference ranked above its generated pair)
    objective: str = "hinge"

    optimizer: torch.optim.Optimizer
    steps: int = 0

    @abstractmethod
    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The discriminator's trainable parameters by name (everything else stays frozen)."""

    @abstractmethod
    def discriminator_loss(self, reference: torch.Tensor, generated: torch.Tensor,
                           prompts: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss on aligned (reference, generated) pairs; ``prompts`` are the generated images' prompts."""

    @torch.no_grad()
    def accuracy(self, reference: torch.Tensor, generated: torch.Tensor, prompts: list[str]) -> float:
        """Share of correct decisions: sign of the score (hinge) or reference above generated (pairwise)."""
        ref = self(reference, prompts).scores
        gen = self(generated, prompts).scores
        if self.objective == "pairwise":
            return (ref > gen).float().mean().item()
        return 0.5 * ((ref > 0).float().mean() + (gen < 0).float().mean()).item()

    def update(self, reference: torch.Tensor, generated: torch.Tensor, prompts: list[str],
               reduce_gradient: GradReducer | None = None) -> dict[str, float]:
        """One optimizer step of the discriminator; ``reduce_gradient`` averages gradients across processes."""
        params = self.trainable_parameters()
        for p in params.values():
            p.requires_grad_(True)
        self._train_mode(True)
        try:
            loss, metrics = self.discriminator_loss(reference, generated, prompts)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"reward {self.name!r}: non-finite discriminator loss {loss.item()}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for p in params.values():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                if reduce_gradient is not None:
                    p.grad.copy_(reduce_gradient(p.grad))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        finally:
            self._train_mode(False)
            for p in params.values():
                p.requires_grad_(False)
        self.steps += 1
        return {"loss": loss.item(), **metrics}

    def _train_mode(self, on: bool) -> None:
        """Switch the trainable part between train and eval mode (the backbone stays in eval mode)."""

    def state_dict(self) -> dict:
        return {"weights": {k: v.detach().cpu().clone() for k, v in self.trainable_parameters().items()},
                "optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        params = self.trainable_parameters()
        missing = sorted(set(params) - set(state["weights"]))
        if missing:
            raise KeyError(f"reward {self.name!r}: checkpoint lacks discriminator weights {missing[:5]}")
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(state["weights"][k])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])


def hinge_loss(h_ref: torch.Tensor, h_gen: torch.Tensor) -> torch.Tensor:
    """``0.5 (E relu(1 - h_ref) + E relu(1 + h_gen))``: zero once references score >= 1 and generations <= -1."""
    return 0.5 * (F.relu(1 - h_ref).mean() + F.relu(1 + h_gen).mean())


def pairwise_loss(s_ref: torch.Tensor, s_gen: torch.Tensor) -> torch.Tensor:
    """``mean softplus(s_gen - s_ref)`` = ``-log sigmoid(s_ref - s_gen)`` over aligned pairs."""
    return F.softplus(s_gen - s_ref).mean()


class DiscriminatorHead(nn.Module):
    """MLP ``dim -> hidden -> GELU -> 1`` applied token-wise (shared by CLS and patch tokens)."""

    def __init__(self, dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens).squeeze(-1)


@register_reward("dino_adversarial")
class DinoAdversarialReward(AdversarialReward):
    """Adv-GRPO's DINO discriminator reward ``cls_weight h(c) + patch_weight mean_{j in S} h(p_j)``.

    ``backbone``: a DINOv2 id/dir, ``"toy"`` (the toy CLIP's image tower) or an open_clip model
    (see :func:`rewards.backbones.build_backbone`). ``num_patches`` tokens are drawn with
    replacement per image (0: all patch tokens, which makes the score deterministic). The head is
    initialised from ``seed`` so every process starts from the same discriminator. The reward does
    not read the prompt.
    """

    objective = "hinge"

    def __init__(self, backbone: str = "facebook/dinov2-base", hidden: int = 512, cls_weight: float = 0.7,
                 patch_weight: float = 0.3, num_patches: int = 64, patch_loss_weight: float = 0.3,
                 normalize: bool = True, lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.999),
                 seed: int = 0, device: str | torch.device = "cpu", **backbone_options) -> None:
        self.device = torch.device(device)
        self.backbone = build_backbone(backbone, **backbone_options).to(self.device)
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=gen)))
            self.head = DiscriminatorHead(self.backbone.dim, hidden)
        self.head.to(self.device).eval().requires_grad_(False)
        self.cls_weight, self.patch_weight, self.patch_loss_weight = cls_weight, patch_weight, patch_loss_weight
        self.num_patches, self.normalize, self.seed = num_patches, normalize, seed
        self.optimizer = torch.optim.Adam(self.head.parameters(), lr=lr, betas=tuple(betas))
        self._patch_gen = torch.Generator().manual_seed(seed + 1)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return dict(self.head.named_parameters())

    def state_dict(self) -> dict:
        return {**super().state_dict(), "patch_rng": self._patch_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._patch_gen.set_state(state["patch_rng"])

    def _train_mode(self, on: bool) -> None:
        self.head.train(on)

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLS ``(N, D)`` and patch ``(N, P, D)`` features of the frozen backbone, normalised as configured."""
        cls, patches = self.backbone(images.to(self.device))
        if self.normalize:
            cls, patches = F.normalize(cls, dim=-1), F.normalize(patches, dim=-1)
        return cls, patches

    def _patch_subset(self, patches: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not self.num_patches:
            return patches
        idx = torch.randint(patches.shape[1], (patches.shape[0], self.num_patches), generator=generator)
        return torch.gather(patches, 1, idx.to(patches.device)[..., None].expand(-1, -1, patches.shape[-1]))

    def head_scores(self, images: torch.Tensor, generator: torch.Generator | None = None):
        """``h(cls)`` ``(N,)`` and ``h`` of the sampled patch tokens ``(N, S)`` (differentiable in the head)."""
        cls, patches = self.features(images)
        return self.head(cls), self.head(self._patch_subset(patches, generator))

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        h_cls, h_patch = self.head_scores(images, self._patch_gen)
        scores = self.cls_weight * h_cls + self.patch_weight * h_patch.mean(-1)
        return RewardOutput(scores.float().cpu(), {"h_cls": h_cls.cpu().tolist()})

    def discriminator_loss(self, reference, generated, prompts):
        ref_cls, ref_patch = self.head_scores(reference, self._patch_gen)
        gen_cls, gen_patch = self.head_scores(generated, self._patch_gen)
        cls_loss = hinge_loss(ref_cls, gen_cls)
        patch_loss = hinge_loss(ref_patch, gen_patch)
        loss = cls_loss + self.patch_loss_weight * patch_loss
        return loss, {"cls_loss": cls_loss.item(), "patch_loss": patch_loss.item()}


@register_reward("pickscore_adversarial")
class PickScoreAdversarialReward(PickScoreReward, AdversarialReward):
    """PickScore as an adversarial reward: its last ``tune_layers`` vision blocks learn ``softplus(s_gen - s_ref)``.

    ``tune_layers=1`` is what the released code tunes; the paper says the last two.
    """

    objective = "pairwise"

    def __init__(self, model: str = PICKSCORE_MODEL, processor: str = PICKSCORE_PROCESSOR, scale: float = 1 / 26,
                 tune_layers: int = 1, lr: float = 5e-6, device: str | torch.device = "cpu",
                 dtype: str = "float32") -> None:
        super().__init__(model=model, processor=processor, scale=scale, device=device, dtype=dtype)
        self.model.requires_grad_(False)
        layers = self.model.vision_model.encoder.layers
        if not 1 <= tune_layers <= len(layers):
            raise ValueError(f"pickscore_adversarial: tune_layers must be in 1..{len(layers)}, got {tune_layers}")
        first = len(layers) - tune_layers
        self._trainable = {f"vision_model.encoder.layers.{first + i}.{n}": p
                           for i, layer in enumerate(layers[first:]) for n, p in layer.named_parameters()}
        self._tuned = layers[first:]
        self.optimizer = torch.optim.Adam(self._trainable.values(), lr=lr)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return self._trainable

    def _train_mode(self, on: bool) -> None:
        self._tuned.train(on)

    def discriminator_loss(self, reference, generated, prompts):
        s_ref = self.scores_with_grad(reference, prompts)
        s_gen = self.scores_with_grad(generated, prompts)
        return pairwise_loss(s_ref, s_gen), {"score_gap": (s_ref - s_gen).mean().item()}
