"""Training of the toy video-text model (:class:`rewards.video_text.VideoTextModel`) on the toy video world, as
InternVideo2's stage 2 trains its towers and fusion encoder, in small:

- **contrastive** (ITC): the symmetric InfoNCE loss between the projected ``[CLS]`` states of a batch of clips and
  their prompts (distinct prompts; a pair that means the same clip, e.g. "moving left" and "moving slowly left"
  of the same object, is not counted as a negative);
- **matching** (ITM / VTM): the 2-way head on the fused ``[CLS]`` learns positives against *hard* negatives drawn
  as ALBEF / BLIP draw them (for each clip one other prompt of the batch sampled in proportion to its contrastive
  similarity, and for each prompt one other clip likewise) and as many uniformly drawn ones, the positives
  weighted as all negatives together. Hard negatives alone leave this small model's head at chance: the
  contrastive towers soon make them near-duplicates (one word apart), with no easy pairs to start from.

Clips are rendered fresh every step from the world's ``train`` prompts, with Gaussian pixel noise of a random
level so the model meets the imperfect clips a generator draws; the ``test`` prompts measure generalisation.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genrl.utils.files import replace_dir_atomically
from rewards.toyvideo import TOY_VIDEO_TEXT_DIR
from rewards.toyvideo.prompts import split
from rewards.toyvideo.render import render_batch
from rewards.toyvideo.world import FRAME_SIZE, NUM_FRAMES, VIDEO_FAMILIES, VideoSpec, video_vocabulary
from rewards.video_text import VideoTextConfig, VideoTextModel

from .runlog import jsonl_logger
from .tokenizer import MODEL_MAX_LENGTH, build_toy_tokenizer


@dataclass
class VideoTextTrainConfig:
    """Settings of the toy video-text model's training (defaults: the shipped weights' recipe)."""

    seed: int = 0
    threads: int = 2
    steps: int = 2000
    batch_size: int = 64  # distinct prompts per batch
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.05
    max_noise: float = 0.1  # pixel noise std drawn uniformly in [0, max_noise] per clip
    log_every: int = 100
    out_dir: str = str(TOY_VIDEO_TEXT_DIR)


def video_text_tokenizer():
    """The toy CLIP tokenizer over the video vocabulary (the one the toy video pipeline uses)."""
    return build_toy_tokenizer(video_vocabulary())


def same_meaning(a: VideoSpec, b: VideoSpec) -> bool:
    """Whether one clip can satisfy both prompts: equal specs, or a ``direction`` and a ``speed`` prompt of the
    same object and direction (a clip moving left 1 px per frame is both "moving left" and "moving slowly left")."""
    if a == b:
        return True
    return ({a.family, b.family} == {"direction", "speed"} and a.objects == b.objects
            and a.direction == b.direction)


def render_clips(specs: list[VideoSpec], rng: random.Random, max_noise: float = 0.0) -> torch.Tensor:
    """Fresh clips ``(B, F, 3, H, W)`` in [0, 1] of ``specs``, each with Gaussian noise of std in [0, max_noise]."""
    clips = torch.from_numpy(render_batch(specs, rng)).permute(0, 1, 4, 2, 3).float() / 255.0
    if max_noise > 0:
        std = torch.tensor([rng.uniform(0, max_noise) for _ in specs]).view(-1, 1, 1, 1, 1)
        clips = (clips + std * torch.randn(clips.shape, generator=torch.Generator().manual_seed(rng.getrandbits(62))))
    return clips.clamp(0, 1)


def _sample_negatives(similarity: torch.Tensor, excluded: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One column per row, drawn in proportion to ``softmax(similarity)`` over the columns not ``excluded``."""
    weights = torch.softmax(similarity.float().masked_fill(excluded, float("-inf")), dim=1)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def training_losses(model: VideoTextModel, clips: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                    excluded: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The contrastive and the hard-negative matching loss of a batch of paired clips and prompts; ``excluded``
    ``(B, B)`` marks the pairs that are not negatives (the diagonal and pairs of one meaning)."""
    video_tokens, video_emb = model.encode_video(clips)
    text_tokens, text_emb = model.encode_text(ids, mask)
    logits = model.logit_scale.exp().clamp(max=100) * video_emb @ text_emb.T
    off_diagonal = excluded & ~torch.eye(len(ids), dtype=torch.bool)
    masked = logits.masked_fill(off_diagonal, float("-inf"))
    target = torch.arange(len(ids))
    itc = (F.cross_entropy(masked, target) + F.cross_entropy(masked.T, target)) / 2
    with torch.no_grad():  # per clip a hard and an easy negative prompt; per prompt a hard and an easy clip
        neg_text = [_sample_negatives(s, excluded, generator) for s in (logits, torch.zeros_like(logits))]
        neg_video = [_sample_negatives(s, excluded.T, generator) for s in (logits.T, torch.zeros_like(logits))]
    all_text = torch.cat([text_tokens, *(text_tokens[n] for n in neg_text), text_tokens, text_tokens])
    all_mask = torch.cat([mask, *(mask[n] for n in neg_text), mask, mask])
    all_video = torch.cat([video_tokens, video_tokens, video_tokens, *(video_tokens[n] for n in neg_video)])
    labels = torch.cat([torch.ones(len(ids)), torch.zeros(4 * len(ids))]).long()
    # the positive class weighted as the four negative sets together: a balanced head
    itm = F.cross_entropy(model.match_logits(all_text, all_mask, all_video), labels,
                          weight=torch.tensor([1.0, 4.0], device=labels.device))
    return {"itc": itc, "itm": itm}


@torch.no_grad()
def matching_probability(model: VideoTextModel, clips: torch.Tensor, ids: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
    """The matching head's positive-class probability of paired clips and prompts."""
    video_tokens, _ = model.encode_video(clips)
    text_tokens, _ = model.encode_text(ids, mask)
    return torch.softmax(model.match_logits(text_tokens, mask, video_tokens), -1)[:, 1]


@torch.no_grad()
def evaluate_video_text(model: VideoTextModel, tokenizer, specs: list[VideoSpec], rng: random.Random,
                        per_prompt: int = 4) -> dict:
    """Per family, on clean clips of ``specs``: top-1 retrieval of a clip's prompt among the family's prompts by
    the contrastive embeddings (prompts of one meaning count as right), and the matching head's pairwise accuracy,
    the share of (clip, own prompt, another prompt of the family) triples it ranks right."""
    model.eval()
    out: dict[str, dict[str, float]] = {"retrieval_top1": {}, "itm_pairwise": {}}
    for family in VIDEO_FAMILIES:
        fam = [s for s in specs if s.family == family]
        if len(fam) < 2:
            continue
        ids, mask = model.tokenize(tokenizer, [s.prompt for s in fam])
        _, text_emb = model.encode_text(ids, mask)
        expanded = [i for i in range(len(fam)) for _ in range(per_prompt)]
        clips = render_clips([fam[i] for i in expanded], rng)
        _, video_emb = model.encode_video(clips)
        pred = (video_emb @ text_emb.T).argmax(-1).tolist()
        out["retrieval_top1"][family] = float(np.mean([same_meaning(fam[p], fam[t]) for p, t in zip(pred, expanded)]))
        others = [rng.choice([j for j in range(len(fam)) if not same_meaning(fam[j], fam[i])]) for i in expanded]
        positive = matching_probability(model, clips, ids[expanded], mask[expanded])
        negative = matching_probability(model, clips, ids[others], mask[others])
        out["itm_pairwise"][family] = float((positive > negative).float().mean())
    for metric in list(out):
        out[metric]["overall"] = float(np.mean(list(out[metric].values())))
    return out


def build_video_text_model(tokenizer, seed: int = 0) -> VideoTextModel:
    """A freshly initialised toy video-text model sized for the toy video world and ``tokenizer``."""
    torch.manual_seed(seed)
    return VideoTextModel(VideoTextConfig(
        vocab_size=len(tokenizer), max_text_length=MODEL_MAX_LENGTH, num_frames=NUM_FRAMES, image_size=FRAME_SIZE,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))


def save_video_text_model(model: VideoTextModel, tokenizer, out_dir: str | Path) -> None:
    """Write the model (config + safetensors) and its tokenizer (in ``tokenizer/``) to ``out_dir``, replacing it
    atomically."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp / "tokenizer")
    replace_dir_atomically(out_dir, write)


def train_video_text(cfg: VideoTextTrainConfig, log_path: str | Path | None = None) -> dict:
    """Train the toy video-text model; saves it to ``cfg.out_dir`` and returns its held-out evaluation. Progress
    is printed and, with ``log_path``, written there as JSON lines."""
    log = jsonl_logger(log_path)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    tokenizer = video_text_tokenizer()
    model = build_video_text_model(tokenizer, cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    train = list(split("train"))
    start = time.time()
    for step in range(cfg.steps):
        model.train()
        specs = rng.sample(train, min(cfg.batch_size, len(train)))
        ids, mask = model.tokenize(tokenizer, [s.prompt for s in specs])
        excluded = torch.tensor([[same_meaning(a, b) for b in specs] for a in specs])
        losses = training_losses(model, render_clips(specs, rng, cfg.max_noise), ids, mask, excluded, generator)
        loss = losses["itc"] + losses["itm"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            log({"step": step, **{k: round(v.item(), 4) for k, v in losses.items()},
                 "elapsed_s": round(time.time() - start, 1)})
    model.eval()
    save_video_text_model(model, tokenizer, cfg.out_dir)
    result = {"train_seconds": round(time.time() - start, 1), "config": asdict(cfg),
              "test": evaluate_video_text(model, tokenizer, list(split("test")), random.Random(1))}
    log(result)
    return result



@torch.no_grad()
def toy_embedding_pairs(embedder, specs: list[VideoSpec], clips_per_prompt: int, rng: random.Random,
                        batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Paired text and video embeddings ``(len(specs) * clips_per_prompt, D)`` of freshly rendered clean clips of
    ``specs`` (the data of the toy OT map), from an embedder of :mod:`rewards.video_embedders`."""
    expanded = [s for s in specs for _ in range(clips_per_prompt)]
    text, video = [], []
    for i in range(0, len(expanded), batch_size):
        chunk = expanded[i:i + batch_size]
        text.append(embedder.embed_text([s.prompt for s in chunk]))
        video.append(embedder.embed_video(render_clips(chunk, rng)))
    return torch.cat(text), torch.cat(video)
