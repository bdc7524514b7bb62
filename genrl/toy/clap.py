"""A tiny CLAP of the toy audio world (transformers ``ClapModel``), trained contrastively on rendered clips and
their prompts.

Its architecture is CLAP's at a tiny size: an HTSAT audio tower (a Swin transformer over the log-mel
spectrogram read as an image: 64 mel bands x 64 frames of a one-second 8 kHz clip, 4 x 4 patches, two stages)
and a RoBERTa-shaped text tower (two layers, width 64) on the toy CLIP tokenizer, both projected to a shared
64-dimensional space. It is saved with ``save_pretrained`` (model and ``ClapProcessor``, whose feature extractor
works at the toy world's 8 kHz), so it loads as a hub CLAP does::

    model = ClapModel.from_pretrained(TOY_CLAP_DIR)
    processor = ClapProcessor.from_pretrained(TOY_CLAP_DIR)

and the ``clap`` reward takes it as ``model: toy`` (the CLAP score, and the frame embedding of ``per_song_fd`` /
``dataset_fd`` / ``vendi``). Like the toy CLIP, it is trained on the ``train`` prompts only; its retrieval accuracy
is reported on the held-out ones (the test prompts that are not also training prompts).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from genrl.utils.files import replace_dir_atomically
from rewards.base import projected_features
from rewards.toyaudio import TOY_CLAP_DIR
from rewards.toyaudio.prompts import split
from rewards.toyaudio.render import render
from rewards.toyaudio.world import FAMILIES, SAMPLE_RATE, AudioSpec, vocabulary

if TYPE_CHECKING:
    from transformers import ClapModel, ClapProcessor

from .contrastive import ContrastiveTrainConfig, contrastive_optimizer
from .runlog import jsonl_logger
from .tokenizer import MODEL_MAX_LENGTH, build_toy_tokenizer

#: Log-mel front end: 256-sample windows, hop 128 (63 frames a second, which HTSAT stretches to its 64),
#: 64 mel bands over 50 Hz-4 kHz
MEL_BANDS, FFT_WINDOW, MEL_HOP = 64, 256, 128
EMBED_DIM = 64


def held_out_specs() -> list[AudioSpec]:
    """The test prompts that are not also training prompts (the single-note family is in both splits)."""
    train = set(split("train"))
    return [s for s in split("test") if s not in train]


def build_toy_clap(seed: int = 0) -> tuple[ClapModel, ClapProcessor]:
    """A randomly initialised toy CLAP: ``(ClapModel, ClapProcessor)`` (deterministic for a seed)."""
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        ClapTextConfig,
    )

    torch.manual_seed(seed)
    tokenizer = build_toy_tokenizer(vocabulary())
    # rand_trunc: one spectrogram channel (the fusion front end is for clips longer than the model's window)
    features = ClapFeatureExtractor(feature_size=MEL_BANDS, sampling_rate=SAMPLE_RATE, hop_length=MEL_HOP,
                                    max_length_s=1, fft_window_size=FFT_WINDOW, frequency_min=50,
                                    frequency_max=SAMPLE_RATE // 2, truncation="rand_trunc", padding="repeatpad")
    text = ClapTextConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=128, max_position_embeddings=MODEL_MAX_LENGTH + 2, type_vocab_size=1,
                          pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, projection_dim=EMBED_DIM, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0)
    # the toy tokenizer pads with its end token, so RoBERTa's position ids treat that token as padding; harmless,
    # since CLAP pools the text at the first token (which attends to every real one)
    # spec_size = mel bands: HTSAT folds time into its square input only beyond that (freq_ratio 1)
    audio = ClapAudioConfig(spec_size=MEL_BANDS, num_mel_bins=MEL_BANDS, window_size=4, depths=[2, 2],
                            num_attention_heads=[2, 4], patch_embeds_hidden_size=32, hidden_size=64,
                            projection_dim=EMBED_DIM, hidden_dropout_prob=0.0)
    config = ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=EMBED_DIM)
    return ClapModel(config), ClapProcessor(feature_extractor=features, tokenizer=tokenizer)


def load_toy_clap(path: str | Path | None = None) -> tuple[ClapModel, ClapProcessor]:
    """The shipped toy CLAP (or one saved by :func:`save_toy_clap`): ``(ClapModel, ClapProcessor)``."""
    from transformers import ClapModel, ClapProcessor

    path = Path(path) if path is not None else TOY_CLAP_DIR
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no toy CLAP at {path} (config.json missing); train it with "
                                "`python scripts/train_toy_clap.py`")
    return ClapModel.from_pretrained(path).eval(), ClapProcessor.from_pretrained(path)


def save_toy_clap(model: ClapModel, processor: ClapProcessor, out_dir: str | Path) -> None:
    """``save_pretrained`` of the model and its processor into ``out_dir``, atomically (a complete folder or none)."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    replace_dir_atomically(out_dir, write)


@dataclass
class ClapTrainConfig(ContrastiveTrainConfig):
    """Settings of the toy CLAP's contrastive training (defaults: the shipped weights' recipe)."""

    steps: int = 2500
    batch_size: int = 64  # distinct prompts per batch (duplicates would be false negatives)
    out_dir: str = str(TOY_CLAP_DIR)

    def __post_init__(self) -> None:
        super().__post_init__()
        train = len(split("train"))
        if not 2 <= self.batch_size <= train:
            raise ValueError(f"batch_size={self.batch_size} must be in 2..{train} (the distinct train prompts)")


def clap_inputs(processor: ClapProcessor, specs: list[AudioSpec], clips: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """The processor's model inputs for clips (at the world's rate) and their specs' prompts."""
    return dict(processor(text=[s.prompt for s in specs], audio=clips, sampling_rate=SAMPLE_RATE,
                          return_tensors="pt", padding=True))


@torch.no_grad()
def retrieval_accuracy(model: ClapModel, processor: ClapProcessor, specs: list[AudioSpec], rng: random.Random,
                       per_prompt: int = 4) -> dict:
    """Zero-shot top-1 accuracy of picking a clip's prompt among the prompts of its family (``specs``'s), per
    family and their mean."""
    model.eval()
    hits: dict[str, float] = {}
    for family in FAMILIES:
        fam = [s for s in specs if s.family == family]
        if len(fam) < 2:
            continue
        text = processor(text=[s.prompt for s in fam], return_tensors="pt", padding=True)
        text_emb = F.normalize(projected_features(model.get_text_features(**text)), dim=-1)
        clips = [render(s, rng.randrange(1 << 31)) for s in fam for _ in range(per_prompt)]
        audio = processor(audio=clips, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        audio_emb = F.normalize(projected_features(model.get_audio_features(**audio)), dim=-1)
        pred = (audio_emb @ text_emb.T).argmax(-1)
        hits[family] = float((pred == torch.arange(len(fam)).repeat_interleave(per_prompt)).float().mean())
    if not hits:
        raise ValueError("retrieval needs a family with two or more of the given prompts")
    hits["overall"] = float(np.mean(list(hits.values())))
    return hits


def train_toy_clap(cfg: ClapTrainConfig, log_path: str | Path | None = None) -> dict:
    """Train the toy CLAP with CLAP's symmetric contrastive loss on fresh renders of the train prompts (a new
    clip for every prompt of every batch); saves it and returns its held-out retrieval accuracy. Progress is
    printed and, with ``log_path``, written there as JSON lines."""
    log = jsonl_logger(log_path)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    model, processor = build_toy_clap(cfg.seed)
    opt, sched = contrastive_optimizer(model, cfg)
    train = list(split("train"))
    start = time.time()
    for step in range(cfg.steps):
        model.train()
        specs = rng.sample(train, cfg.batch_size)
        clips = [render(s, rng.randrange(1 << 31)) for s in specs]
        loss = model(**clap_inputs(processor, specs, clips), return_loss=True).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            log({"step": step, "loss": round(loss.item(), 4), "elapsed_s": round(time.time() - start, 1)})
    model.eval()
    save_toy_clap(model, processor, cfg.out_dir)
    loaded, loaded_processor = load_toy_clap(cfg.out_dir)
    result = {"train_seconds": round(time.time() - start, 1), "config": asdict(cfg),
              "test_retrieval_top1": retrieval_accuracy(loaded, loaded_processor, held_out_specs(),
                                                        random.Random(1))}
    log(result)
    return result
