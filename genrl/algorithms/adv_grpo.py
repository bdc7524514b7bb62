"""Adv-GRPO: Flow-GRPO against a reward model that is trained adversarially during the run.

The reward is a :class:`rewards.adversarial.AdversarialReward` among ``reward.weights`` (possibly
next to frozen rewards). Every epoch samples from the generator; then either the discriminator
takes one step on (reference, generated) pairs and the generator is left alone, or the
generator takes its Flow-GRPO update with the discriminator frozen (``reference/adv-grpo.md``):

- ``adv.schedule=d_times``: discriminator epochs except each ``d_times``-th (the DINO code), so E
  epochs hold exactly ``E // d_times`` generator epochs;
- ``adv.schedule=gate``: a discriminator epoch iff mean r(gen) > mean r(ref) over all processes
  (the PickScore code).

Discriminator gradients are averaged across processes, so every process holds the same
discriminator; its weights, optimizer state and the step counters are saved with each checkpoint.
"""

from __future__ import annotations

import torch

from rewards.adversarial import AdversarialReward
from rewards.references import ReferenceImages
from rewards.seeding import derived_seed

from .base import RolloutBatch, register_algorithm
from .flow_grpo import FlowGRPO


def discriminator_turn(schedule: str, epoch: int, d_times: int, gen_mean: float | None = None,
                       ref_mean: float | None = None) -> bool:
    """Whether epoch ``epoch`` (0-based) trains the discriminator instead of the generator."""
    if schedule == "d_times":
        return (epoch + 1) % d_times != 0
    if schedule == "gate":
        if gen_mean is None or ref_mean is None:
            raise ValueError("the gate schedule needs the mean rewards of generated and reference images")
        return gen_mean > ref_mean
    raise ValueError(f"unknown adv.schedule {schedule!r}; expected 'd_times' or 'gate'")


@register_algorithm("adv_grpo")
class AdvGRPO(FlowGRPO):
    """Flow-GRPO updates interleaved with discriminator steps of the run's adversarial reward."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.adv, self.seed = cfg.adv, cfg.seed
        self.reward_name: str | None = None
        self.reward: AdversarialReward | None = None
        self.references: ReferenceImages | None = None
        self.discriminator_steps = 0
        self.generator_epochs = 0

    def setup(self, trainer) -> None:
        super().setup(trainer)
        found = {n: r for n, r in trainer.reward_fn.components.items() if isinstance(r, AdversarialReward)}
        if len(found) != 1:
            raise ValueError("train.algorithm=adv_grpo needs exactly one adversarial reward in reward.weights "
                             f"(dino_adversarial or pickscore_adversarial); found {sorted(found) or 'none'}")
        (self.reward_name, self.reward), = found.items()
        a = self.adv
        self.references = ReferenceImages(a.references, per_prompt=a.references_per_prompt,
                                          heldout=a.heldout_references, seed=self.seed,
                                          image_size=a.reference_image_size)
        trainer.checkpoint_object("adv_grpo", self)
        trainer.checkpoint_object(f"reward/{self.reward_name}", self.reward)

    def state_dict(self) -> dict:
        return {"discriminator_steps": self.discriminator_steps, "generator_epochs": self.generator_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.discriminator_steps = int(state["discriminator_steps"])
        self.generator_epochs = int(state["generator_epochs"])

    def generator_update(self, trainer, batches: list[RolloutBatch]) -> tuple[bool, dict[str, float]]:
        acc, epoch = trainer.accelerator, trainer.state.epoch
        prompts = [p for b in batches for p in b.prompts]
        metadata = [m for b in batches for m in b.metadata]
        generated = torch.cat([b.media.as_float(acc.device).tensor for b in batches])
        rng = torch.Generator().manual_seed(derived_seed(self.seed, "references", epoch, acc.process_index))
        reference = self.references.sample(prompts, metadata, rng)
        heldout = self.references.sample_heldout(prompts, metadata, rng)
        gen_scores = torch.cat([b.extras["reward_components"][self.reward_name] for b in batches]).float()
        ref_scores = self.reward(reference, prompts, metadata).scores.float()
        accuracy = self.reward.accuracy(heldout, generated, prompts)  # before the update: unseen generations
        totals = acc.reduce(torch.tensor([gen_scores.nansum().item(), ref_scores.nansum().item(),
                                          float(gen_scores.isfinite().sum()), float(ref_scores.isfinite().sum()),
                                          accuracy * len(prompts), float(len(prompts))], device=acc.device), "sum")
        gen_mean, ref_mean = (totals[0] / totals[2]).item(), (totals[1] / totals[3]).item()
        train_d = discriminator_turn(self.adv.schedule, epoch, self.adv.d_times, gen_mean, ref_mean)
        metrics = {"adv/reward_gen": gen_mean, "adv/reward_ref": ref_mean, "adv/reward_gap": ref_mean - gen_mean,
                   "adv/heldout_accuracy": (totals[4] / totals[5]).item(), "adv/discriminator_epoch": float(train_d)}
        if train_d:
            def average(grad: torch.Tensor) -> torch.Tensor:
                return acc.reduce(grad.to(acc.device), "mean").to(grad.device)

            out = self.reward.update(reference, generated, prompts,
                                     reduce_gradient=average if acc.num_processes > 1 else None)
            self.discriminator_steps += 1
            metrics.update({f"adv/d_{k}": v for k, v in out.items()})
        else:
            self.generator_epochs += 1
        metrics.update({"adv/discriminator_steps": float(self.discriminator_steps),
                        "adv/generator_epochs": float(self.generator_epochs)})
        return not train_d, metrics
