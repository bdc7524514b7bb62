"""A tiny open_clip model of the toy world, trained contrastively on rendered scenes and their prompts.

The architecture is a registered open_clip config (``genrl-toy-clip``, a ViT over 4x4 patches of
32 px images and a two-layer text transformer on the toy CLIP tokenizer). The trained model is
shipped in open_clip's ``local-dir:`` layout (``open_clip_config.json``, safetensors weights,
tokenizer files), so it loads with the same calls as a hub CLIP::

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{TOY_CLIP_DIR}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{TOY_CLIP_DIR}")
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from genrl.utils.files import replace_dir_atomically
from rewards.toyworld import TOY_CLIP_DIR
from rewards.toyworld.prompts import split
from rewards.toyworld.render import render_batch
from rewards.toyworld.world import FAMILIES, IMAGE_SIZE, PromptSpec

from .contrastive import ContrastiveTrainConfig, contrastive_optimizer
from .pipeline import ASSETS_DIR
from .tokenizer import MODEL_MAX_LENGTH, build_toy_tokenizer

TOY_CLIP_NAME = "genrl-toy-clip"
_CONFIG_DIR = ASSETS_DIR / "open_clip_configs"
#: Pixel normalisation of the toy CLIP (images in [0, 1] map to [-1, 1]).
TOY_CLIP_MEAN = (0.5, 0.5, 0.5)
TOY_CLIP_STD = (0.5, 0.5, 0.5)


def toy_clip_model_config() -> dict:
    """The open_clip model config of the toy CLIP."""
    tok = build_toy_tokenizer()
    return {
        "embed_dim": 64,
        "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 3, "width": 96, "head_width": 32, "patch_size": 4},
        "text_cfg": {"context_length": MODEL_MAX_LENGTH, "vocab_size": len(tok), "width": 64, "heads": 2,
                     "layers": 2, "pool_type": "eos", "eos_id": tok.eos_token_id, "pad_id": tok.pad_token_id,
                     "hf_tokenizer_name": TOY_CLIP_NAME},
    }


def register_toy_clip_config() -> str:
    """Register the ``genrl-toy-clip`` architecture with open_clip (idempotent); returns its name."""
    if TOY_CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)
    return TOY_CLIP_NAME


def load_toy_clip(path: str | Path | None = None):
    """Load the shipped toy CLIP (or one saved by :func:`save_toy_clip`): ``(model, preprocess, tokenizer)``."""
    path = Path(path) if path is not None else TOY_CLIP_DIR
    if not (path / "open_clip_config.json").is_file():
        raise FileNotFoundError(f"no toy CLIP at {path} (open_clip_config.json missing); "
                                "train it with `python scripts/train_toy_clip.py`")
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    return model.eval(), preprocess, tokenizer


def save_toy_clip(model: torch.nn.Module, out_dir: str | Path) -> None:
    """Write the model in open_clip's local-dir layout (config, safetensors, tokenizer), atomically."""
    config = {"model_cfg": toy_clip_model_config(),
              "preprocess_cfg": {"mean": list(TOY_CLIP_MEAN), "std": list(TOY_CLIP_STD),
                                 "interpolation": "bicubic", "resize_mode": "shortest"}}

    def write(tmp: Path) -> None:
        (tmp / "open_clip_config.json").write_text(json.dumps(config, indent=2))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "open_clip_model.safetensors")
        build_toy_tokenizer().save_pretrained(tmp)
    replace_dir_atomically(out_dir, write)


def images_to_clip_input(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` floats in [0, 1] -> the toy CLIP's normalised input (differentiable)."""
    mean = torch.tensor(TOY_CLIP_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(TOY_CLIP_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


@dataclass
class ClipTrainConfig(ContrastiveTrainConfig):
    """Settings of the toy CLIP's contrastive training."""

    steps: int = 800
    batch_size: int = 96
    out_dir: str = str(TOY_CLIP_DIR)


def _scenes(specs: list[PromptSpec], rng: random.Random) -> torch.Tensor:
    return torch.from_numpy(render_batch(specs, rng)).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def retrieval_accuracy(model, tokenizer, specs: list[PromptSpec], rng: random.Random, per_prompt: int = 4) -> dict:
    """Zero-shot top-1 accuracy of picking an image's prompt among the prompts of its family."""
    model.eval()
    hits: dict[str, list[float]] = {}
    for family in FAMILIES:
        fam = [s for s in specs if s.family == family]
        if len(fam) < 2:
            continue
        text = F.normalize(model.encode_text(tokenizer([s.prompt for s in fam])), dim=-1)
        expanded = [s for s in fam for _ in range(per_prompt)]
        image = F.normalize(model.encode_image(images_to_clip_input(_scenes(expanded, rng))), dim=-1)
        pred = (image @ text.T).argmax(-1)
        target = torch.arange(len(fam)).repeat_interleave(per_prompt)
        hits[family] = (pred == target).float().tolist()
    out = {f: float(np.mean(v)) for f, v in hits.items()}
    out["overall"] = float(np.mean(list(out.values())))
    return out


def train_toy_clip(cfg: ClipTrainConfig, log: Callable[[dict], None] = print) -> dict:
    """Train the toy CLIP with the symmetric InfoNCE loss of CLIP; saves it and returns test retrieval accuracy."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model = open_clip.create_model(register_toy_clip_config())
    tokenizer = build_toy_tokenizer()

    def tokenize(texts: list[str]) -> torch.Tensor:
        return tokenizer(texts, padding="max_length", max_length=MODEL_MAX_LENGTH, truncation=True,
                         return_tensors="pt").input_ids

    loss_fn = open_clip.ClipLoss()
    opt, sched = contrastive_optimizer(model, cfg)
    train = list(split("train"))
    start = time.time()
    for step in range(cfg.steps):
        model.train()
        specs = rng.sample(train, min(cfg.batch_size, len(train)))
        img_f, txt_f, scale = model(images_to_clip_input(_scenes(specs, rng)), tokenize([s.prompt for s in specs]))
        loss = loss_fn(img_f, txt_f, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            log({"step": step, "loss": round(loss.item(), 4), "elapsed_s": round(time.time() - start, 1)})
    model.eval()
    save_toy_clip(model, cfg.out_dir)
    _, _, loaded_tok = load_toy_clip(cfg.out_dir)
    result = {"train_seconds": round(time.time() - start, 1), "config": asdict(cfg),
              "test_retrieval_top1": retrieval_accuracy(model, loaded_tok, list(split("test")), random.Random(1))}
    log(result)
    return result
