"""Write a randomly initialised SD3 pipeline whose transformer has SD3.5-Medium's block structure.

    python bench/build_random_sd3.py --out /tmp/sd3-random              # 24 blocks, hidden 1536 (SD3.5-M)
    python bench/build_random_sd3.py --out /tmp/sd3-small --layers 8
    python bench/overhead.py model.pretrained=/tmp/sd3-random model.height=256 model.width=256 \
        mixed_precision=bf16 "reward.weights={brightness: 1.0}" "reward.options={}"

For measuring the trainer at a realistic model size where no weights can be downloaded: the
transformer is SD3.5-Medium's (24 heads of 64, RMS qk-norm, dual attention in the first 13 blocks,
patch 2), the VAE and CLIP text towers are the toy pipeline's (the VAE is convolutional, so 256 px
images give 128x128 latents, i.e. 4096 image tokens, as SD3.5-M has at 1024 px). The images it draws
are noise; the point is the cost of its forward and backward passes.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and diffusers load in seconds: imported once the command line is checked
    from diffusers import SD3Transformer2DModel


def sd35_medium_like(layers: int, max_tokens_per_side: int, latent_channels: int) -> SD3Transformer2DModel:
    """SD3.5-Medium's transformer shape (patch 2) over the toy VAE's latent channels and the toy text widths."""
    from diffusers import SD3Transformer2DModel

    from genrl.toy.pipeline import TEXT_HIDDEN, TEXT_PROJECTION

    return SD3Transformer2DModel(
        sample_size=2 * max_tokens_per_side, patch_size=2, in_channels=latent_channels, out_channels=latent_channels,
        num_layers=layers, attention_head_dim=64, num_attention_heads=24, joint_attention_dim=2 * TEXT_HIDDEN,
        caption_projection_dim=1536, pooled_projection_dim=2 * TEXT_PROJECTION, pos_embed_max_size=max_tokens_per_side,
        qk_norm="rms_norm", dual_attention_layers=tuple(range(min(13, layers))))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--size", type=int, default=256, help="largest image side the positional table covers (px)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.layers < 1 or args.size < 16:  # at least one token per side for a VAE of up to /8, patch /2
        parser.error("--layers must be >= 1 and --size >= 16")
    import torch  # torch and diffusers load in seconds: only once the command line is checked

    from genrl.toy.pipeline import load_toy_pipeline

    torch.manual_seed(args.seed)
    pipe = load_toy_pipeline()
    vae = pipe.vae.config
    downsample = 2 ** (len(vae.block_out_channels) - 1)  # each VAE block but the last halves the side
    pipe.transformer = sd35_medium_like(args.layers, args.size // (2 * downsample), vae.latent_channels)
    pipe.register_modules(transformer=pipe.transformer)
    pipe.save_pretrained(args.out, safe_serialization=True)
    params = sum(p.numel() for p in pipe.transformer.parameters())
    print(f"wrote {args.out}: transformer {params / 1e9:.2f} B parameters, {args.layers} blocks")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
