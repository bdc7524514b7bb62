"""Model adapters for Qwen-Image-Edit (``QwenImageEditPipeline``) and Qwen-Image-Edit-2509 / 2511
(``QwenImageEditPlusPipeline``): an instruction edit conditioned twice on the source image(s), with norm-rescaled
true classifier-free guidance.

Conditioning, as the stock pipeline builds it: the source image is resized to about ``condition_area`` pixels
(1024^2, multiples of 32) at its aspect ratio; (1) Qwen2.5-VL reads it with the instruction through the
edit chat template (the template's first 64 tokens dropped, the rest masked to each prompt's length);
(2) its VAE latents (the distribution's mode, normalised by ``latents_mean`` / ``latents_std``) are packed
2 x 2 and concatenated on the sequence after the noisy tokens, ``img_shapes`` listing the target's grid
and then the condition's; the prediction is sliced back to the noisy tokens. Guidance is true CFG with
the negative prompt (``" "`` by default), rescaled per token to the conditional prediction's norm:
``comb = neg + w (cond - neg)``, ``v = comb |cond| / |comb|``. The schedule is FLUX's (``linspace(1, 1/T, T)``
shifted by the noisy sequence length). Each prompt's condition is a mapping with an ``"image"`` (PIL, a
``(3, H, W)`` tensor in [0, 1] or a path); tensors are quantised to 8-bit PIL first, since the stock
pipeline and its VL processor take PIL images.

The Plus pipeline (Qwen-Image-Edit-2509) differs in the conditioning only: a prompt may name several source
images; Qwen2.5-VL reads each at about ``vl_condition_area`` pixels (384^2) behind a ``"Picture i: "`` label,
while the VAE encodes each at about ``condition_area`` (1024^2) from the original image; the packed latents of a
prompt's sources are concatenated on the sequence and ``img_shapes`` lists one grid per source. The stock Plus
pipeline takes one prompt per call; the adapter encodes each prompt alone, as the stock call does, and pads the
batch's embeddings with masked zeros.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions
from PIL import Image
from torchvision.transforms.functional import to_pil_image

from .base import ModelAdapter, register_adapter
from .flux import PackedLatents
from .flux_kontext import as_condition_image
from .sd3 import MMDIT_LORA_TARGETS


def source_of(condition: Mapping[str, Any], index: int) -> Any:
    """The ``"image"`` of prompt ``index``'s condition, or an error naming the prompt."""
    if "image" not in condition:
        raise ValueError(f"condition {index} has no 'image' (keys: {sorted(condition)})")
    return condition["image"]


def source_pil(value: Any, index: int) -> Image.Image:
    """A source image as PIL RGB; a tensor is quantised to 8 bits, as saving it would, since the stock pipelines and
    their VL processor take PIL images."""
    image = as_condition_image(value, index)
    return to_pil_image(image[0].clamp(0, 1)) if isinstance(image, torch.Tensor) else image


@dataclass
class QwenEditConditioning:
    """VL embeddings of (source image, instruction) with their mask, the packed source latents, the condition
    grid, and the negative prompt's embeddings when CFG is used."""

    embeds: torch.Tensor  # (B, L, D)
    mask: torch.Tensor | None  # (B, L); None when no prompt is padded
    image_latents: torch.Tensor  # (B, N_image, 4 C)
    condition_grids: tuple[tuple[int, int, int], ...]  # (1, h, w) of each source's packed tokens, in order
    negative_embeds: torch.Tensor | None = None
    negative_mask: torch.Tensor | None = None

    def select(self, index: torch.Tensor | slice) -> QwenEditConditioning:
        """The conditioning of a subset of the batch."""
        pick = lambda t: None if t is None else t[index]
        return QwenEditConditioning(self.embeds[index], pick(self.mask), self.image_latents[index], self.condition_grids,
                                    pick(self.negative_embeds), pick(self.negative_mask))


@register_adapter("qwen_image_edit", "QwenImageEditPipeline")
class QwenImageEditAdapter(PackedLatents, ModelAdapter):
    """Uniform policy interface over a ``QwenImageEditPipeline`` (Qwen-Image-Edit and tiny test configs).

    Options: ``guidance_scale`` (the true-CFG scale, the pipeline's ``true_cfg_scale``; 4.0), ``negative_prompt``
    (" "), ``height`` / ``width`` of the edit (multiples of 16; 1024), ``condition_area`` (pixels the source is
    resized to, the pipeline's 1024^2). Guidance-distilled checkpoints (``guidance_embeds``) are refused rather
    than sampled wrongly.
    """

    default_lora_targets = MMDIT_LORA_TARGETS
    frozen_components = ("vae", "text_encoder")
    condition_keys = ("image",)
    noise_has_frame_axis = True

    def __init__(self, pipe, *, guidance_scale: float = 4.0, negative_prompt: str = " ", height: int = 1024,
                 width: int = 1024, condition_area: int = 1024**2) -> None:
        super().__init__(pipe)
        if self.transformer.config.guidance_embeds:
            raise ValueError("guidance-distilled Qwen-Image transformers (guidance_embeds) are not supported by the "
                             "qwen_image_edit family")
        multiple = pipe.vae_scale_factor * 2
        for name, size in (("height", height), ("width", width)):
            if size <= 0 or size % multiple:
                raise ValueError(f"{name}={size} must be a positive multiple of {multiple} (VAE x{pipe.vae_scale_factor}, "
                                 "packed 2 x 2)")
        if condition_area <= 0:
            raise ValueError(f"condition_area={condition_area} must be positive")
        self.guidance_scale, self.negative_prompt = guidance_scale, negative_prompt
        self.height, self.width, self.condition_area = height, width, condition_area
        self.num_train_timesteps = pipe.scheduler.config.num_train_timesteps

    # ------------------------------------------------------------------ conditioning
    @torch.no_grad()
    def encode(self, prompts: Sequence[str], guidance_scale: float | None = None,
               conditions: Sequence[Mapping[str, Any]] | None = None) -> QwenEditConditioning:
        """VL embeddings of each (source, instruction), the source latents, and the negative prompt's embeddings
        (with the same sources) when sampling at ``guidance_scale`` (None: the adapter's) uses CFG."""
        if conditions is None or len(conditions) != len(prompts):
            raise ValueError(f"the {self.family} family needs one condition with an 'image' per prompt "
                             f"({len(prompts)} prompts, {0 if conditions is None else len(conditions)} conditions)")
        use_cfg = (self.guidance_scale if guidance_scale is None else guidance_scale) > 1.0
        vl_images, image_latents, grids = self._encode_sources(conditions)
        embeds, mask = self._encode_text(list(prompts), vl_images)
        negative = negative_mask = None
        if use_cfg:
            negative, negative_mask = self._encode_text([self.negative_prompt] * len(prompts), vl_images)
        dtype = self.transformer.dtype
        cast = lambda t: None if t is None else t.to(dtype)
        return QwenEditConditioning(embeds.to(dtype), mask, image_latents.to(dtype), grids, cast(negative),
                                    negative_mask)

    def _encode_text(self, prompts: list[str], vl_images: list[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The VL embeddings and mask of each prompt read with its source, as one batch (the stock edit call)."""
        return self.pipe.encode_prompt(prompt=prompts, image=vl_images, device=self.device)

    def _encode_sources(self, conditions: Sequence[Mapping[str, Any]]
                        ) -> tuple[list[Any], torch.Tensor, tuple[tuple[int, int, int], ...]]:
        """The sources as the VL encoder reads them, their packed VAE latents and the condition grid."""
        pipe = self.pipe
        images, (height, width) = self._condition_images(conditions)
        pixels = pipe.image_processor.preprocess(images, height, width).unsqueeze(2)
        packed, grid = self._packed_latents(pixels)
        return images, packed, (grid,)

    def _packed_latents(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """``(B, 3, 1, H, W)`` pixels in [-1, 1] -> the pipeline's normalised latents (the mode), packed 2 x 2,
        with their token grid."""
        pipe = self.pipe
        latents = pipe._encode_vae_image(pixels.to(self.device, pipe.vae.dtype), generator=None)
        b, c, _, h, w = latents.shape
        return pipe._pack_latents(latents, b, c, h, w), (1, h // 2, w // 2)

    def _condition_images(self, conditions: Sequence[Mapping[str, Any]]) -> tuple[list[Image.Image], tuple[int, int]]:
        """Each source as PIL resized as the pipeline resizes it; all of a batch must come out the same size."""
        images, sizes = [], []
        for i, condition in enumerate(conditions):
            image = source_pil(source_of(condition, i), i)
            width, height, _ = calculate_dimensions(self.condition_area, image.size[0] / image.size[1])
            images.append(self.pipe.image_processor.resize(image, height, width))
            sizes.append((height, width))
        if len(set(sizes)) > 1:
            raise ValueError(f"the source images of one batch must resize to one size; condition 0 gives {sizes[0]}, "
                             f"condition {next(i for i, s in enumerate(sizes) if s != sizes[0])} another")
        return images, sizes[0]

    # ------------------------------------------------------------------ the policy
    def velocity(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: QwenEditConditioning,
                 guidance_scale: float | None = None, model=None) -> torch.Tensor:
        """Velocity at noise level ``sigma`` (scalar or per sample): the conditional forward and, with CFG, the
        negative one, combined with the pipeline's norm rescaling; ``model`` overrides the transformer."""
        model = model or self.transformer
        w = self.guidance_scale if guidance_scale is None else guidance_scale
        t = torch.as_tensor(sigma, device=x.device, dtype=torch.float32) * self.num_train_timesteps
        t = (t.expand(x.shape[0]) if t.ndim == 0 else t).to(x.dtype)
        h, w_ = self._latent_hw()
        img_shapes = [[(1, h // 2, w_ // 2), *cond.condition_grids]] * x.shape[0]
        hidden = torch.cat([x, cond.image_latents.to(x.dtype)], dim=1)

        def forward(embeds: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            out = model(hidden_states=hidden, timestep=t / 1000, guidance=None, encoder_hidden_states_mask=mask,
                        encoder_hidden_states=embeds, img_shapes=img_shapes, return_dict=False)[0]
            return out[:, : x.shape[1]]

        cond_pred = forward(cond.embeds, cond.mask)
        if w <= 1.0:
            return cond_pred
        if cond.negative_embeds is None:
            raise ValueError(f"guidance_scale {w} > 1 needs the negative prompt's embeddings; encode the prompts with "
                             "that guidance_scale")
        neg_pred = forward(cond.negative_embeds, cond.negative_mask)
        comb = neg_pred + w * (cond_pred - neg_pred)
        return comb * (torch.norm(cond_pred, dim=-1, keepdim=True) / torch.norm(comb, dim=-1, keepdim=True))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Packed latents -> images ``(N, 3, H, W)`` in [0, 1] (differentiable), the pipeline's de-normalisation."""
        vae, z = self.pipe.vae, self.pipe.vae.config.z_dim
        latents = self.pipe._unpack_latents(latents, self.height, self.width, self.pipe.vae_scale_factor).to(vae.dtype)
        mean = torch.tensor(vae.config.latents_mean, device=latents.device, dtype=latents.dtype).view(1, z, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std, device=latents.device, dtype=latents.dtype).view(1, z, 1, 1, 1)
        image = vae.decode(latents * std + mean, return_dict=False)[0][:, :, 0]
        return (image / 2 + 0.5).clamp(0, 1)


@register_adapter("qwen_image_edit_plus", "QwenImageEditPlusPipeline")
class QwenImageEditPlusAdapter(QwenImageEditAdapter):
    """Uniform policy interface over a ``QwenImageEditPlusPipeline`` (Qwen-Image-Edit-2509 / 2511).

    A condition's ``"image"`` is one source or a list of sources (multi-image editing; every prompt of a batch
    names as many, of one size). Options as the ``qwen_image_edit`` family's, with ``condition_area`` the pixels
    the VAE reads each source at (the pipeline's 1024^2) and ``vl_condition_area`` those Qwen2.5-VL reads it at
    (384^2).
    """

    def __init__(self, pipe, *, guidance_scale: float = 4.0, negative_prompt: str = " ", height: int = 1024,
                 width: int = 1024, condition_area: int = 1024**2, vl_condition_area: int = 384**2) -> None:
        super().__init__(pipe, guidance_scale=guidance_scale, negative_prompt=negative_prompt, height=height,
                         width=width, condition_area=condition_area)
        if vl_condition_area <= 0:
            raise ValueError(f"vl_condition_area={vl_condition_area} must be positive")
        self.vl_condition_area = vl_condition_area

    def _encode_text(self, prompts: list[str], vl_images: list[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each prompt encoded alone with its sources (the stock call takes one prompt), zero-padded to the
        batch's longest with the padding masked out."""
        rows = [self.pipe.encode_prompt(prompt=[prompt], image=images, device=self.device)
                for prompt, images in zip(prompts, vl_images, strict=True)]
        length = max(embeds.shape[1] for embeds, _ in rows)
        embeds = torch.cat([torch.nn.functional.pad(e, (0, 0, 0, length - e.shape[1])) for e, _ in rows])
        masks = [torch.ones(e.shape[:2], dtype=torch.long, device=e.device) if m is None else m for e, m in rows]
        mask = torch.cat([torch.nn.functional.pad(m, (0, length - m.shape[1])) for m in masks])
        return embeds, None if bool(mask.all()) else mask

    def _encode_sources(self, conditions: Sequence[Mapping[str, Any]]
                        ) -> tuple[list[Any], torch.Tensor, tuple[tuple[int, int, int], ...]]:
        """Per prompt, its sources resized for the VL encoder; the batch's packed VAE latents of every source,
        concatenated on the sequence in order, and one grid per source."""
        vl_images, latents, grids = [], [], None
        for i, condition in enumerate(conditions):
            sources = source_of(condition, i)
            sources = sources if isinstance(sources, (list, tuple)) else [sources]
            if not sources:
                raise ValueError(f"condition {i}: 'image' is an empty list")
            readable, packed, shapes = [], [], []
            for source in sources:
                image = source_pil(source, i)
                ratio = image.size[0] / image.size[1]
                vl_width, vl_height, _ = calculate_dimensions(self.vl_condition_area, ratio)
                readable.append(self.pipe.image_processor.resize(image, vl_height, vl_width))
                width, height, _ = calculate_dimensions(self.condition_area, ratio)
                tokens, grid = self._packed_latents(self.pipe.image_processor.preprocess(image, height, width)
                                                    .unsqueeze(2))
                packed.append(tokens)
                shapes.append(grid)
            if grids is None:
                grids = tuple(shapes)
            elif tuple(shapes) != grids:
                raise ValueError(f"the sources of one batch must be as many and resize to one size; condition 0 "
                                 f"gives token grids {list(grids)}, condition {i} {shapes}")
            vl_images.append(readable)
            latents.append(torch.cat(packed, dim=1))
        return vl_images, torch.cat(latents), grids
