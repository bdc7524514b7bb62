"""Generate a captioned sample grid from a pipeline, deterministically for a seed.

    python scripts/sample_grid.py --out grid.png                          # toy pipeline, toy test prompts
    python scripts/sample_grid.py --model ./my-pipeline --prompts prompts.txt --out grid.png
    python scripts/sample_grid.py --prompts toy:test --reward toy_verifier --out grid.png
    python scripts/sample_grid.py --model ./wan --prompts p.txt --option num_frames=33 --out clips.gif
    python scripts/sample_grid.py --model ./stable-audio --prompts p.txt --reward clap --out audio/
    python scripts/sample_grid.py --model toy_video --lora RUN/final/lora --prompts toyvideo:test \
        --reward toy_video_verifier --out clips.gif

A video family (Wan) writes an animated GIF grid and a PNG strip of frames; an audio family (Stable Audio)
writes a folder of WAV files with a spectrogram sheet and an HTML index with players. Both sample with
the family's adapter and the deterministic sampler; ``--option key=value`` sets the family's options.

--prompts takes a .txt file (one prompt per line), a .jsonl file of toy specs, or a toy world's split (toy:test,
toyvideo:test, toyaudio:test, ...; their specs go to --reward). The shipped toy video and audio pipelines
(``--model toy_video`` / ``toy_audio``) sample with their worlds' clip shape, steps and guidance by default.
The arguments, the prompt file and a local --model / --lora directory are checked before torch and
the pipeline load, so bad input fails at once with one ``error: ...`` line (exit status 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genrl.config import (
    TOY_AUDIO_MODEL_ALIASES,
    TOY_VIDEO_MODEL_ALIASES,
    known_rewards,
    local_pipeline_problem,
)
from genrl.data import PromptDataset, load_prompts
from rewards.cli_options import parse_options


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with its numbers and --reward checked (argparse's usage error, exit status 2)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy", help="hub id, local pipeline dir, or 'toy' (default)")
    parser.add_argument("--lora", default=None, help="a LoRA directory to load on top (e.g. a run's final/lora)")
    parser.add_argument("--prompts", default="toy:test", help="prompt file or a toy split (toy:test, toyvideo:test, ...)")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--max-prompts", type=int, default=16)
    parser.add_argument("--images-per-prompt", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the toy pipeline's, else 28)")
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the toy pipeline's, else 4.5)")
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--reward", default=None, help="annotate each image with this registered reward, e.g. toy_verifier")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the model family's adapter (video / audio families), e.g. num_frames=33")
    args = parser.parse_args(argv)
    try:
        args.options = parse_options(args.option)
    except ValueError as err:
        parser.error(str(err))
    for flag in ("max_prompts", "images_per_prompt", "columns", "steps"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.reward is not None and args.reward not in known_rewards():
        parser.error(f"--reward: unknown reward {args.reward!r}; available: {known_rewards()}")
    return args


def checked_inputs(args: argparse.Namespace) -> PromptDataset:
    """The prompts to draw (each repeated ``--images-per-prompt`` times) with their metadata, after checking the
    files and directories the arguments name (no model loads).

    Raises ``ValueError`` / ``FileNotFoundError`` naming the argument.
    """
    problem = local_pipeline_problem(args.model)
    if problem:
        raise FileNotFoundError(f"--model {args.model!r}: {problem}")
    if args.lora is not None and not Path(args.lora).is_dir():
        raise FileNotFoundError(f"--lora {args.lora!r}: LoRA directory not found")
    data = load_prompts(args.prompts)
    picked = [i for i in range(min(args.max_prompts, len(data))) for _ in range(args.images_per_prompt)]
    return PromptDataset([data.prompts[i] for i in picked], [data.metadata[i] for i in picked], data.source)


def draw_grid(args: argparse.Namespace, items: PromptDataset) -> int:
    """Sample one image per item, caption (and optionally score) them, and write the grid."""
    from genrl.grid import make_grid, save_image_atomically
    from genrl.models.loading import TOY_ALIASES, load_pipeline
    from genrl.toy.evaluate import generate
    from genrl.toy.pipeline import TOY_GUIDANCE_SCALE, TOY_MAX_SEQUENCE_LENGTH, TOY_NUM_INFERENCE_STEPS

    prompts = items.prompts
    is_toy = args.model in TOY_ALIASES
    pipe = load_pipeline(args.model, lora=args.lora)
    pipe.set_progress_bar_config(disable=True)
    from genrl.models import adapter_class, served_family

    family = served_family(type(pipe).__name__)
    if family is not None and adapter_class(family).media_kind != "image":
        return draw_media_sheet(args, pipe, family, items)
    if args.options:
        raise ValueError("--option applies to video and audio families; this pipeline makes images")
    images = generate(
        pipe, prompts, [args.seed + i for i in range(len(prompts))],
        num_inference_steps=args.steps or (TOY_NUM_INFERENCE_STEPS if is_toy else 28),
        guidance_scale=args.guidance if args.guidance is not None else (TOY_GUIDANCE_SCALE if is_toy else 4.5),
        max_sequence_length=TOY_MAX_SEQUENCE_LENGTH if is_toy else None)
    captions = list(prompts)
    if args.reward:
        from rewards import build_reward

        scores = build_reward(args.reward)(images, prompts, items.metadata).scores.tolist()
        captions = [f"[{args.reward}={s:.2f}] {c}" for s, c in zip(scores, captions, strict=True)]
    path = save_image_atomically(make_grid(images, captions, columns=args.columns), args.out)
    print(f"wrote {path} ({len(images)} images)")
    return 0


def toy_media_defaults(model: str) -> tuple[dict, int | None]:
    """The adapter options and sampling steps of a shipped toy video or audio pipeline (none for other models)."""
    if model in TOY_VIDEO_MODEL_ALIASES:
        from genrl.toy.video_pipeline import TOY_VIDEO_NUM_INFERENCE_STEPS, adapter_options

        return adapter_options(), TOY_VIDEO_NUM_INFERENCE_STEPS
    if model in TOY_AUDIO_MODEL_ALIASES:
        from genrl.toy.audio_pipeline import TOY_AUDIO_GUIDANCE_SCALE, TOY_AUDIO_NUM_INFERENCE_STEPS

        return {"guidance_scale": TOY_AUDIO_GUIDANCE_SCALE}, TOY_AUDIO_NUM_INFERENCE_STEPS
    return {}, None


def draw_media_sheet(args: argparse.Namespace, pipe, family: str, items: PromptDataset) -> int:
    """Sample a video or audio family with its adapter's deterministic sampler and write its sheet."""
    import torch

    from genrl.generation import generate
    from genrl.media_sheets import save_media_sheet
    from genrl.models import build_adapter
    from rewards.media import Media

    prompts = items.prompts
    options, toy_steps = toy_media_defaults(args.model)
    options.update(args.options)
    if args.guidance is not None:
        options["guidance_scale"] = args.guidance
    adapter = build_adapter(family, pipe, **options)
    media = []
    for start in range(0, len(prompts), 4):  # a few clips per forward: video latents are large
        chunk = prompts[start:start + 4]
        gens = [torch.Generator().manual_seed(args.seed + start + i) for i in range(len(chunk))]
        with torch.no_grad():
            out = generate(adapter, chunk, [{} for _ in chunk], sigmas=adapter.schedule(args.steps or toy_steps or 50),
                           noise_generators=gens)
        media.append(out.media.stored())
    media = Media.cat(media)
    captions = list(prompts)
    if args.reward:
        from rewards import build_reward

        scores = build_reward(args.reward)(media, prompts, items.metadata).scores.tolist()
        captions = [f"{c}\n{args.reward} {s:.2f}" for s, c in zip(scores, captions, strict=True)]
    written = save_media_sheet(media, captions, args.out, columns=args.columns)
    print(f"wrote {', '.join(str(p) for p in written)} ({len(media)} {media.kind} samples)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Check the inputs, then draw the grid; bad input raises ``ValueError`` / ``FileNotFoundError``."""
    args = parse_args(argv)
    return draw_grid(args, checked_inputs(args))


def cli(argv: list[str] | None = None) -> int:
    """:func:`main` for the command line: bad input is one ``error: ...`` line and exit status 2, no traceback."""
    args = parse_args(argv)
    try:
        items = checked_inputs(args)
    except (ValueError, FileNotFoundError) as err:  # only the input checks: a failure while drawing keeps its traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    return draw_grid(args, items)


if __name__ == "__main__":
    sys.exit(cli())
