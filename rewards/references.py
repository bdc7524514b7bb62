"""Reference images for rewards that compare generations with real images (Adv-GRPO, reference similarity).

A source gives each prompt its reference images (paired) or draws from one pool (unpaired):

- ``"toy"``: scenes rendered by the toy world's renderer from the prompt's spec, deterministic per
  prompt and seed;
- a folder with ``metadata.jsonl`` (lines ``{"file": "a.png", "prompt": "..."}``): paired;
- a folder of images without ``metadata.jsonl``: an unpaired pool (searched recursively).

A few references per prompt (``heldout``) are kept out of :meth:`ReferenceImages.sample` and
served by :meth:`ReferenceImages.sample_heldout`, so a discriminator's accuracy can be measured
on images it was never trained on.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from rewards.seeding import derived_seed

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class ReferenceImages:
    """Reference images keyed by prompt (or one unpaired pool), loaded lazily and cached as uint8."""

    def __init__(self, source: str = "toy", per_prompt: int = 8, heldout: int = 1, seed: int = 0,
                 image_size: int | None = None) -> None:
        if per_prompt < 1 or not 0 <= heldout < per_prompt:
            raise ValueError(f"references need per_prompt >= 1 and 0 <= heldout < per_prompt "
                             f"(got per_prompt={per_prompt}, heldout={heldout})")
        self.source, self.per_prompt, self.heldout, self.seed = source, per_prompt, heldout, seed
        self.image_size = image_size
        self._cache: dict[str, torch.Tensor] = {}
        self._files: dict[str, list[Path]] | None = None
        self._pool: list[Path] | None = None
        if source != "toy":
            self._index_folder(Path(source).expanduser())

    @property
    def paired(self) -> bool:
        """True when every prompt has its own references (toy, or a folder with metadata.jsonl)."""
        return self._pool is None

    def _index_folder(self, root: Path) -> None:
        if not root.is_dir():
            raise FileNotFoundError(f"reference image folder not found: {root}")
        meta = root / "metadata.jsonl"
        if meta.is_file():
            files: dict[str, list[Path]] = {}
            for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    path, prompt = root / item["file"], item["prompt"]
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise ValueError(f"{meta}:{n}: expected {{\"file\": ..., \"prompt\": ...}} ({err})") from err
                if not path.is_file():
                    raise FileNotFoundError(f"{meta}:{n}: reference image {path} does not exist")
                files.setdefault(prompt, []).append(path)
            if not files:
                raise ValueError(f"{meta} lists no reference images")
            self._files = files
        else:
            pool = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if len(pool) < 2:
                raise ValueError(f"reference folder {root} holds fewer than two images ({IMAGE_SUFFIXES})")
            self._pool = pool

    # ------------------------------------------------------------------ loading
    def _load_files(self, paths: list[Path]) -> torch.Tensor:
        from PIL import Image

        arrays = []
        for path in paths:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if self.image_size:
                    im = im.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
                arrays.append(np.asarray(im))
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"reference images differ in size {sorted(shapes)}; set image_size to resize them")
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def _render_toy(self, prompt: str, metadata: dict | None) -> torch.Tensor:
        from rewards.toyworld.prompts import spec_from_prompt
        from rewards.toyworld.render import render
        from rewards.toyworld.world import PromptSpec

        spec = (metadata or {}).get("spec")
        spec = PromptSpec.from_dict(spec) if isinstance(spec, dict) else spec or spec_from_prompt(prompt)
        rng = random.Random(derived_seed(self.seed, "reference", prompt))
        images = np.stack([render(spec, rng)[0] for _ in range(self.per_prompt)])
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    def all_for(self, prompt: str, metadata: dict | None = None) -> torch.Tensor:
        """Every reference of ``prompt`` as uint8 ``(K, 3, H, W)`` (the whole pool when unpaired)."""
        key = prompt if self.paired else ""
        if key not in self._cache:
            if self.source == "toy":
                self._cache[key] = self._render_toy(prompt, metadata)
            elif self._pool is not None:
                self._cache[key] = self._load_files(self._pool)
            else:
                if prompt not in self._files:
                    raise KeyError(f"no reference image for prompt {prompt!r} in {self.source}/metadata.jsonl")
                self._cache[key] = self._load_files(self._files[prompt])
        return self._cache[key]

    def _split(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.paired:
            k = images.shape[0] - self.heldout if images.shape[0] > self.heldout else images.shape[0]
            return images[:k], images[k:] if k < images.shape[0] else images
        heldout = images[:: self.per_prompt] if self.heldout else images[:0]  # every per_prompt-th pool image
        mask = torch.ones(images.shape[0], dtype=torch.bool)
        if self.heldout:
            mask[:: self.per_prompt] = False
        return images[mask], heldout if heldout.shape[0] else images

    def _sample(self, prompts: list[str], metadata: list[dict] | None, generator: torch.Generator,
                heldout: bool) -> torch.Tensor:
        metadata = metadata or [{} for _ in prompts]
        out = []
        for prompt, meta in zip(prompts, metadata, strict=True):
            train, held = self._split(self.all_for(prompt, meta))
            choices = held if heldout else train
            out.append(choices[torch.randint(choices.shape[0], (1,), generator=generator).item()])
        return torch.stack(out).float() / 255.0

    def sample(self, prompts: list[str], metadata: list[dict] | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """One training reference per prompt, float ``(N, 3, H, W)`` in [0, 1]."""
        return self._sample(prompts, metadata, generator or torch.Generator().manual_seed(self.seed), False)

    def sample_heldout(self, prompts: list[str], metadata: list[dict] | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """One held-out reference per prompt (never returned by :meth:`sample` when ``heldout > 0``)."""
        return self._sample(prompts, metadata, generator or torch.Generator().manual_seed(self.seed), True)
