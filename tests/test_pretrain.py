import json

import torch
from diffusers import StableDiffusion3Pipeline

from genrl.toy.pipeline import load_toy_pipeline
from genrl.toy.pretrain import PretrainConfig, pretrain

TINY = dict(vae_steps=3, vae_batch_size=4, steps=3, batch_size=4, warmup_steps=1, eval_every=0,
            final_eval_images_per_prompt=0, restart_steps=0)


def test_pretraining_is_reproducible_and_saves_a_loadable_pipeline(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    pretrain(PretrainConfig(out_dir=str(a), **TINY), log_path=tmp_path / "a.jsonl")
    pretrain(PretrainConfig(out_dir=str(b), **TINY))
    pa = StableDiffusion3Pipeline.from_pretrained(a, text_encoder_3=None, tokenizer_3=None, local_files_only=True)
    pb = load_toy_pipeline(b)
    for (name, x), (_, y) in zip(pa.transformer.state_dict().items(), pb.transformer.state_dict().items()):
        assert torch.equal(x, y), name
    assert pa.vae.config.scaling_factor == pb.vae.config.scaling_factor != 1.0
    records = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records][:1] == ["config"] and records[-1]["stage"] == "final"
    assert not (tmp_path / "a.tmp").exists()  # written atomically, no leftovers


def test_warm_restart_equals_a_separate_continuation_run(tmp_path):
    """One run with a restart == a run without it followed by an ``init_from=`` continuation."""
    one, first, second = tmp_path / "one", tmp_path / "first", tmp_path / "second"
    pretrain(PretrainConfig(out_dir=str(one), **{**TINY, "restart_steps": 2}), log_path=tmp_path / "one.jsonl")
    pretrain(PretrainConfig(out_dir=str(first), **TINY))
    pretrain(PretrainConfig(out_dir=str(second), init_from=str(first),
                            **{**TINY, "steps": 2, "lr": 4e-4, "seed": 1}))
    a, b, c = (load_toy_pipeline(d).transformer.state_dict() for d in (one, second, first))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the restart did train
    stages = [json.loads(line)["stage"] for line in (tmp_path / "one.jsonl").read_text().splitlines()]
    assert stages.count("config") == 2 and "cycle_done" in stages and stages[-1] == "final"
