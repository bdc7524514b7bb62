"""Generate a captioned sample grid from a pipeline, deterministically for a seed.

    python scripts/sample_grid.py --out grid.png                          # toy pipeline, toy test prompts
    python scripts/sample_grid.py --model ./my-pipeline --prompts prompts.txt --out grid.png
    python scripts/sample_grid.py --prompts toy:test --reward toy_verifier --out grid.png

--prompts takes a .txt file (one prompt per line), a .jsonl file of toy specs, or toy:train / toy:test.
"""

from __future__ import annotations

import argparse
import sys

from genrl.grid import make_grid, save_image_atomically
from genrl.models.loading import TOY_ALIASES, load_pipeline
from genrl.toy.evaluate import generate
from genrl.toy.pipeline import TOY_GUIDANCE_SCALE, TOY_MAX_SEQUENCE_LENGTH, TOY_NUM_INFERENCE_STEPS
from genrl.toy.prompts import load_prompt_file, split
from genrl.toy.world import PromptSpec


def read_prompts(source: str) -> list[str | PromptSpec]:
    """Prompts from ``toy:<split>`` or a prompt file."""
    if source.startswith("toy:"):
        return list(split(source.removeprefix("toy:")))
    return load_prompt_file(source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy", help="hub id, local pipeline dir, or 'toy' (default)")
    parser.add_argument("--lora", default=None, help="a LoRA directory to load on top (e.g. a run's final/lora)")
    parser.add_argument("--prompts", default="toy:test", help="prompt file or toy:train / toy:test")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--max-prompts", type=int, default=16)
    parser.add_argument("--images-per-prompt", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help=f"sampling steps (toy default: {TOY_NUM_INFERENCE_STEPS})")
    parser.add_argument("--guidance", type=float, default=None, help=f"CFG scale (toy default: {TOY_GUIDANCE_SCALE:.1f})")
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--reward", default=None, help="annotate each image with this registered reward, e.g. toy_verifier")
    args = parser.parse_args(argv)

    items = read_prompts(args.prompts)[: args.max_prompts]
    items = [it for it in items for _ in range(args.images_per_prompt)]
    prompts = [it.prompt if isinstance(it, PromptSpec) else it for it in items]
    is_toy = args.model in TOY_ALIASES
    pipe = load_pipeline(args.model, lora=args.lora)
    pipe.set_progress_bar_config(disable=True)
    images = generate(
        pipe, prompts, [args.seed + i for i in range(len(prompts))],
        num_inference_steps=args.steps or (TOY_NUM_INFERENCE_STEPS if is_toy else 28),
        guidance_scale=args.guidance if args.guidance is not None else (TOY_GUIDANCE_SCALE if is_toy else 4.5),
        max_sequence_length=TOY_MAX_SEQUENCE_LENGTH if is_toy else None)
    captions = list(prompts)
    if args.reward:
        from rewards import build_reward

        metadata = [{"spec": it} if isinstance(it, PromptSpec) else {} for it in items]
        scores = build_reward(args.reward)(images, prompts, metadata).scores.tolist()
        captions = [f"[{args.reward}={s:.2f}] {c}" for s, c in zip(scores, captions, strict=True)]
    path = save_image_atomically(make_grid(images, captions, columns=args.columns), args.out)
    print(f"wrote {path} ({len(images)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
