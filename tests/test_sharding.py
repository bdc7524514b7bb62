"""FSDP2 on CPU: two gloo processes sharding the tiny SD3 and FLUX denoisers per transformer block compute the
loss and LoRA gradients of one unsharded process, stay identical across ranks after AdamW steps, gather the
full LoRA state for export, and resume a sharded checkpoint exactly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.fsdp_worker import batch, build, loss_of
from safetensors.torch import load_file

from genrl.models.lora import ReferencePolicy
from genrl.trainer.sharding import load_sharded

WORKER = Path(__file__).resolve().parent / "helpers" / "fsdp_worker.py"


def _single_process(family: str):
    """The reference: the same model, batch, loss and two AdamW steps without sharding."""
    adapter = build(family)
    prompts, x0, noise, sigma = batch(adapter)
    model = adapter.transformer
    with torch.no_grad(), ReferencePolicy(model).active() as reference:
        x = adapter.add_noise(x0, noise, sigma)
        out_reference = adapter.velocity(x, sigma, adapter.encode(prompts), model=reference)
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(named.values(), lr=1e-2)
    out = {"reference_v": out_reference}
    for k in ("one", "two"):
        optimizer.zero_grad()
        loss = loss_of(adapter, model, prompts, x0, noise, sigma).mean()
        loss.backward()
        if k == "one":
            out["loss"], out["grad"] = float(loss.detach()), {n: p.grad.clone() for n, p in named.items()}
        optimizer.step()
        out[k] = {n: p.detach().clone() for n, p in named.items()}
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("family", "port"), [("sd3", 29531), ("flux", 29532)])
def test_two_sharded_processes_are_one_process(tmp_path, family, port):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(WORKER.parent.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(WORKER), family, str(tmp_path)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    losses = [r["loss"] for r in reports]
    # really sharded: every parameter a DTensor, each rank holding about half of the elements
    assert all(r["dtensors"] == r["parameters"] and 0.4 < r["local_fraction"] < 0.6 for r in reports), reports
    ref = _single_process(family)
    # the ranks agree with each other exactly, and with the single process to float tolerance
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    assert losses[0] == losses[1] and abs(losses[0] - ref["loss"]) < 1e-5 * max(1.0, abs(ref["loss"]))
    grads = {k.removeprefix("grad."): v for k, v in ranks[0].items() if k.startswith("grad.")}
    assert grads and grads.keys() == {n for n in ref["grad"] if "lora_" in n}
    for name, g in grads.items():
        torch.testing.assert_close(g, ref["grad"][name], rtol=1e-4, atol=1e-6)
    for step in ("one", "two"):
        for name, p in ref[step].items():
            torch.testing.assert_close(ranks[0][f"{step}.{name}"], p, rtol=1e-4, atol=1e-6)
    # the reference policy (adapters disabled) under sharding is the unsharded base model
    torch.testing.assert_close(ranks[0]["reference_v"], ref["reference_v"], rtol=1e-4, atol=1e-5)
    # the resumed checkpoint holds step one exactly, and the second step from it is the uninterrupted one
    for name in ref["one"]:
        assert torch.equal(ranks[0][f"resumed_one.{name}"], ranks[0][f"one.{name}"])
        assert torch.equal(ranks[0][f"resumed_two.{name}"], ranks[0][f"two.{name}"])
    # another world size: the two-rank checkpoint loads into one unsharded process (model and AdamW state)
    adapter = build(family)
    optimizer = torch.optim.AdamW([p for p in adapter.transformer.parameters() if p.requires_grad], lr=1e-2)
    load_sharded(tmp_path / "ckpt", adapter.transformer, optimizer)
    for name, p in adapter.transformer.named_parameters():
        if "lora_" in name:
            torch.testing.assert_close(p.detach(), ranks[0][f"one.{name}"], rtol=0, atol=0)
    assert len(optimizer.state) == len(ref["one"])  # the AdamW moments came with it
