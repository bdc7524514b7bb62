"""Run by tests/test_sharding.py under ``torch.distributed.run --nproc_per_node N`` (gloo on CPU).

Every rank builds the same tiny pipeline and LoRA (seeded), shards the denoiser with FSDP2 per transformer
block, and takes its share of one fixed batch: the mean flow-matching loss of its samples. It writes the loss,
the gathered LoRA gradients, the LoRA weights after one AdamW step and the reference policy's velocity (adapters
disabled), then saves a sharded checkpoint, takes a second step, reloads the checkpoint into a freshly sharded
model and takes the second step again; the test compares all of it with one unsharded process, and loads the
two-rank checkpoint into one unsharded process.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor

from genrl.models import build_adapter
from genrl.models.lora import ReferencePolicy, add_lora, lora_config
from genrl.trainer.sharding import full_lora_state_dict, load_sharded, save_sharded, shard_denoiser


def build(family: str):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from helpers.tiny_pipelines import tiny_flux_pipeline

    from genrl.toy.pipeline import build_toy_pipeline

    if family == "sd3":
        adapter = build_adapter("sd3", build_toy_pipeline(seed=3), guidance_scale=1.0, max_sequence_length=0)
    else:
        adapter = build_adapter("flux", tiny_flux_pipeline(), max_sequence_length=16, height=32, width=32)
    torch.manual_seed(7)
    add_lora(adapter.transformer, lora_config(4, 8, list(adapter.default_lora_targets)))
    with torch.no_grad():  # B = 0 would give zero gradients to A: start from a non-trivial adapter
        for name, p in adapter.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return adapter


def batch(adapter, n: int = 4):
    """A fixed batch: prompts, x0, noise and noise levels (the same on every rank)."""
    prompts = ["a photo of a red circle", "a photo of two squares", "a blue triangle", "a green cross"][:n]
    gens = [torch.Generator().manual_seed(100 + i) for i in range(n)]
    x0 = adapter.initial_noise(gens) * 0.5
    noise = adapter.initial_noise([torch.Generator().manual_seed(200 + i) for i in range(n)])
    sigma = torch.linspace(0.2, 0.8, n)
    return prompts, x0, noise, sigma


def loss_of(adapter, model, prompts, x0, noise, sigma):
    """Mean flow-matching loss ``|v(x_s) - (eps - x0)|^2`` of the samples (sum over samples / n_total done outside)."""
    cond = adapter.encode(prompts)
    x = adapter.add_noise(x0, noise, sigma)
    v = adapter.velocity(x, sigma, cond, model=model)
    return ((v.float() - (noise - x0).float()) ** 2).mean(dim=tuple(range(1, v.ndim)))


def main(family: str, out: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    adapter = build(family)
    prompts, x0, noise, sigma = batch(adapter)
    mine = slice(rank * len(prompts) // world, (rank + 1) * len(prompts) // world)
    model = shard_denoiser(adapter.transformer, adapter.blocks)
    shards = [p for p in model.parameters() if isinstance(p, DTensor)]
    layout = {"parameters": len(list(model.parameters())), "dtensors": len(shards),
              "local_fraction": sum(p.to_local().numel() for p in shards) / sum(p.numel() for p in shards)}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    # the reference policy under sharding: the same module with its adapters disabled
    with torch.no_grad(), ReferencePolicy(model).active() as reference:
        cond = adapter.encode(prompts[mine])
        reference_v = adapter.velocity(adapter.add_noise(x0[mine], noise[mine], sigma[mine]), sigma[mine], cond,
                                       model=reference)
    gathered = [torch.zeros_like(reference_v) for _ in range(world)]
    dist.all_gather(gathered, reference_v.contiguous())

    def step():
        optimizer.zero_grad()
        per_sample = loss_of(adapter, model, prompts[mine], x0[mine], noise[mine], sigma[mine])
        loss = per_sample.mean()  # FSDP averages gradients over ranks: the mean over the whole batch
        loss.backward()
        total = loss.detach().clone()
        dist.all_reduce(total)
        grads = {n: p.grad.full_tensor().detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        return float(total) / world, grads

    loss, grads = step()
    after_one = full_lora_state_dict(model, every_rank=True)
    save_sharded(out / "ckpt", model, optimizer)
    _, _ = step()
    after_two = full_lora_state_dict(model, every_rank=True)
    # a fresh model and optimizer, sharded the same way, resumed from the checkpoint: the second step again
    adapter = build(family)
    model = shard_denoiser(adapter.transformer, adapter.blocks)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    load_sharded(out / "ckpt", model, optimizer)
    resumed_one = full_lora_state_dict(model, every_rank=True)
    step()
    resumed_two = full_lora_state_dict(model, every_rank=True)
    save_file({f"grad.{k}": v for k, v in grads.items() if "lora_" in k} | {f"one.{k}": v for k, v in after_one.items()}
              | {f"two.{k}": v for k, v in after_two.items()} | {f"resumed_one.{k}": v for k, v in resumed_one.items()}
              | {f"resumed_two.{k}": v for k, v in resumed_two.items()} | {"reference_v": torch.cat(gathered).contiguous()},
              str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({"loss": loss, "world": world, **layout}))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
