"""CLAP text-audio score: cosine similarity of a waveform's and its prompt's CLAP embeddings.

Two backends load the same kind of model:

- ``backend="transformers"``: ``ClapModel`` + ``ClapProcessor`` by hub id or local directory
  (``laion/clap-htsat-unfused``, ``laion/larger_clap_music``, ...);
- ``backend="laion_clap"``: the ``laion_clap`` package's ``CLAP_Module`` with a checkpoint file
  (the extra ``clap``: ``pip install -e ".[clap]"``), as Stable Audio / DRAGON-style pipelines load it.
  The package builds its text branch from the hub repos ``roberta-base`` (and, at import, the
  tokenizers of ``bert-base-uncased`` and ``facebook/bart-base``), so offline use needs them in the
  Hugging Face cache. The checkpoint is read by :func:`load_laion_clap_state_dict`, not by the
  package's ``load_ckpt``, which unpickles arbitrary objects.

Both backends' preprocessing crops clips longer than the model's window (10 s for the LAION releases, 1 s for the
toy CLAP) at a random offset (CLAP's ``rand_trunc``), so on long audio the score is stochastic; score
window-long chunks to avoid it.

Waveforms arrive at ``sample_rate`` (the generator's, e.g. 44.1 kHz for Stable Audio) and are
resampled with a polyphase filter to the model's rate: its feature extractor's ``sampling_rate`` for the
transformers backend (48 kHz for the LAION releases), 48 kHz for ``laion_clap``.

``model="toy"`` is the toy audio world's CLAP (``rewards.toyaudio.TOY_CLAP_DIR``, a ``ClapModel`` folder at
8 kHz made by ``scripts/train_toy_clap.py``).
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rewards.optional import require

from .base import Reward, RewardOutput, projected_features
from .registry import register_reward
from .weight_files import load_weight_file

CLAP_SAMPLE_RATE = 48_000


def resample(waveforms: torch.Tensor, orig_rate: int, new_rate: int = CLAP_SAMPLE_RATE) -> torch.Tensor:
    """Polyphase resampling of ``(N, T)`` waveforms (scipy's ``resample_poly``) into a float32 CPU tensor, whatever
    the input's device and dtype (the CLAP processors take numpy arrays); no filtering at equal rates."""
    if orig_rate == new_rate:
        out = waveforms.float().cpu()  # the same tensor when it is already one
        return out.detach() if out.requires_grad else out
    from scipy.signal import resample_poly

    g = gcd(int(orig_rate), int(new_rate))
    out = resample_poly(waveforms.detach().cpu().double().numpy(), new_rate // g, orig_rate // g, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(out)).float()


def load_laion_clap_state_dict(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The CLAP model's state dict from a LAION-CLAP checkpoint (``.pt``) or a ``.safetensors`` file.

    ``.pt`` files are read with ``weights_only=True`` (numpy scalars allowed); ``allow_pickle=True``
    unpickles anything, for trusted files only. The ``state_dict`` entry is taken when present, a
    DDP ``module.`` prefix is removed, and ``text_branch.embeddings.position_ids`` (a buffer recent
    transformers no longer saves) is dropped, as the package's own loader does.
    """
    state = load_weight_file(path, "clap", allow_pickle, hint="pass the path of a LAION-CLAP release such as "
                             "630k-audioset-best.pt or music_audioset_epoch_15_esc_90.14.pt")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state.pop("text_branch.embeddings.position_ids", None)
    return state


@register_reward("clap")
class ClapReward(Reward):
    """``scale * cos(CLAP_audio(waveform), CLAP_text(prompt))`` for ``(N, T)`` waveforms."""

    modality = "audio"

    def __init__(self, model: str = "laion/clap-htsat-unfused", backend: str = "transformers",
                 sample_rate: int = CLAP_SAMPLE_RATE, scale: float = 1.0, enable_fusion: bool = False,
                 audio_model: str = "HTSAT-tiny", allow_pickle: bool = False,
                 device: str | torch.device = "cpu") -> None:
        self.device, self.sample_rate, self.scale, self.backend = torch.device(device), sample_rate, scale, backend
        self.model_rate = CLAP_SAMPLE_RATE
        if backend == "transformers":
            from transformers import ClapModel, ClapProcessor

            if model == "toy":
                from rewards.toyaudio import TOY_CLAP_DIR

                if not (TOY_CLAP_DIR / "config.json").is_file():
                    raise FileNotFoundError(f"the toy CLAP is missing at {TOY_CLAP_DIR}; train it with "
                                            "`python scripts/train_toy_clap.py`")
                model = str(TOY_CLAP_DIR)
            self.processor = ClapProcessor.from_pretrained(model)
            self.model = ClapModel.from_pretrained(model).to(self.device).eval().requires_grad_(False)
            self.model_rate = int(self.processor.feature_extractor.sampling_rate)
        elif backend == "laion_clap":
            if model == "toy":
                raise ValueError("clap model=toy is a transformers ClapModel; use backend=transformers")
            laion_clap = require("laion_clap")
            state = load_laion_clap_state_dict(model, allow_pickle)  # before the slow model build
            self.model = laion_clap.CLAP_Module(enable_fusion=enable_fusion, amodel=audio_model, device=self.device)
            self.model.model.load_state_dict(state)
            self.model.eval().requires_grad_(False)
        else:
            raise ValueError(f"clap backend must be 'transformers' or 'laion_clap', got {backend!r}")

    @torch.no_grad()
    def embed_audio(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Unit-norm audio embeddings of ``(N, T)`` waveforms at ``sample_rate``."""
        audio = resample(waveforms, self.sample_rate, self.model_rate)
        if self.backend == "transformers":
            inputs = self.processor(audio=list(audio.numpy()), sampling_rate=self.model_rate, return_tensors="pt")
            emb = projected_features(self.model.get_audio_features(**inputs.to(self.device)))
        else:
            emb = self.model.get_audio_embedding_from_data(x=audio.to(self.device), use_tensor=True)
        return F.normalize(emb.float(), dim=-1)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings (the text tower: prompts, or captions as a cross-modal reference set)."""
        if self.backend == "transformers":
            text = self.processor(text=list(texts), padding=True, return_tensors="pt").to(self.device)
            emb = projected_features(self.model.get_text_features(**text))
        else:
            emb = self.model.get_text_embedding(list(texts), use_tensor=True)
        return F.normalize(emb.float(), dim=-1)

    def embed(self, waveforms: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-norm audio and text embeddings."""
        return self.embed_audio(waveforms), self.embed_text(prompts)

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        audio, text = self.embed(images, prompts)
        cos = (audio * text).sum(-1)
        return RewardOutput((self.scale * cos).cpu(), {"cosine": cos.cpu().tolist()})

