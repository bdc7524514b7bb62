"""Score samples of a config's base model on its training prompts: the per-prompt reference rewards that the
``lsc`` and ``par`` reward transforms compare against.

    python scripts/reference_rewards.py --reward toy_verifier --option mode=partial --samples 10 --out refs.json
    python scripts/reference_rewards.py --config configs/sd3.5m_pickscore.yaml --reward pickscore --out refs.json

Each prompt gets ``--samples`` samples of the model (``model.pretrained``, no LoRA: the base policy) from the
deterministic sampler at ``sample.num_steps`` and ``sample.guidance_scale``, from initial noise seeded by
``(--seed, prompt index, sample)``, scored by ``--reward`` with its ``--option``s. Then train with, e.g.,
``'reward.train=[{name: par, options: {base: {name: toy_verifier, options: {mode: partial}}, references: refs.json}}]'``.
Trailing ``key=value`` arguments override the config as for ``scripts/train_t2i.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genrl.config import load_config_or_exit
from rewards.cli_options import parse_options

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "toy.yaml"


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The command line and the config overrides (argparse's usage error, exit status 2, for bad numbers)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: configs/toy.yaml)")
    parser.add_argument("--reward", required=True, help="the registered reward to score with (the transform's base)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="an option of --reward")
    parser.add_argument("--samples", type=int, default=10, help="samples per prompt (PAR's reference uses 10)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON file to write: {prompt: [scores]}")
    args, overrides = parser.parse_known_args(argv)
    for flag in ("samples", "batch_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    try:
        args.options = parse_options(args.option)
    except ValueError as err:
        parser.error(str(err))
    return args, overrides


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    cfg = load_config_or_exit(args.config, overrides)
    import torch

    from genrl.config import load_prompt_set
    from genrl.generation import generate
    from genrl.models.from_config import adapter_from_config
    from genrl.models.loading import load_pipeline
    from genrl.utils.files import atomic_write_path
    from rewards import build_reward
    from rewards.seeding import derived_seed
    from rewards.transforms import ReferenceRewards

    reward = build_reward(args.reward, **args.options)
    prompts = load_prompt_set("data.train_prompts", cfg.data.train_prompts)
    pipe = load_pipeline(cfg.model.pretrained, trust_remote_code=cfg.model.trust_remote_code,
                         **({"revision": cfg.model.revision} if cfg.model.revision else {}))
    pipe.set_progress_bar_config(disable=True)
    adapter = adapter_from_config(cfg, pipe)
    sigmas = adapter.schedule(cfg.sample.num_steps)
    jobs = [(i, k) for i in range(len(prompts.prompts)) for k in range(args.samples)]
    refs = ReferenceRewards()
    for start in range(0, len(jobs), args.batch_size):
        chunk = jobs[start:start + args.batch_size]
        texts = [prompts.prompts[i] for i, _ in chunk]
        metadata = [prompts.metadata[i] for i, _ in chunk]
        gens = [torch.Generator().manual_seed(derived_seed(args.seed, "reference", i, k)) for i, k in chunk]
        with torch.no_grad():
            media = generate(adapter, texts, metadata, sigmas=sigmas, noise_generators=gens).media
        scores = reward(media, texts, metadata).scores.float().cpu()
        for (i, _), score in zip(chunk, scores, strict=True):
            refs.add(prompts.prompts[i], [float(score)])
    with atomic_write_path(args.out) as tmp:  # a complete file or none, with the umask's permissions
        tmp.write_text(refs.as_json(), encoding="utf-8")
    print(f"wrote {args.out}: {args.samples} reference rewards for each of {len(refs)} prompts ({args.reward})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
