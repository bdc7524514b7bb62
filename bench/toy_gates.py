"""The toy world's learnability gates, measured on a base pipeline before any RL.

    python bench/toy_gates.py                                  # the shipped pipeline, held-out split
    python bench/toy_gates.py --model /tmp/toy --samples 16 --json gates.json
    python bench/toy_gates.py --split test_ood                 # the compositional split

1. **It draws every object**: single-object strict accuracy with the deterministic sampler
   (20 Euler steps, CFG 4.5), overall, per shape and, on the colours family, per colour
   (``--single-images`` images per prompt).
2. **Its errors are the ones RL fixes, and stochastic**: the README's standard evaluation
   (``--images-per-prompt`` 4 per prompt) gives the family mean GenEval reports and what the
   failures are (a missing or extra object, a wrong colour, a wrong relation; and, for multi-object
   images with the right number of objects, which shape was drawn in place of which); then every prompt
   is sampled ``--samples`` times with the *training* sampler of ``--config`` (its steps, SDE
   window and noise level; independent initial noise per sample) and the table gives, per family,
   the mean per-prompt success p, the share of prompts with p = 0, 0 < p < 1 and p = 1, and
   pass@k (some sample strictly right).

The third gate (RL moves it) is a training run and the gradient SNR: see docs/toy-world.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from genrl.config import load_config_or_exit

ROOT = Path(__file__).resolve().parent.parent
FAILURE_KINDS = (("object", re.compile(r"^expected \d+ \w+\(s\), found")),
                 ("colour", re.compile(r"^expected \w+ \w+, found")),
                 ("relation", re.compile(r"^relation ")))


def failure_kind(spec, reason: str) -> str:
    """What a failed verdict got wrong: ``count`` (counting family), ``object``, ``colour`` or ``relation``."""
    for kind, pattern in FAILURE_KINDS:
        if pattern.match(reason):
            return "count" if kind == "object" and spec.family == "counting" else kind
    return "other"


def shape_confusion(spec, detections) -> str | None:
    """For a multi-object prompt drawn with the right number of objects but not the right shapes, which shapes are
    missing and which were drawn instead, and whether every wrong one is another shape the prompt names
    (``leak``: "a circle and a square" drawn as two squares) or not (``other``); None for any other image."""
    if len(spec.objects) < 2:
        return None
    want = Counter(o.shape for o in spec.objects for _ in range(o.count))
    got = Counter(d.shape for d in detections)
    if sum(got.values()) != sum(want.values()) or got == want:
        return None
    missing, drawn = sorted((want - got).elements()), sorted((got - want).elements())
    kind = "leak" if set(drawn) <= set(want) else "other"
    return f"{'+'.join(missing)} -> {'+'.join(drawn)} ({kind})"


def single_object_gate(pipe, specs, images_per_prompt: int) -> dict:
    """Deterministic-sampler strict accuracy of single objects, per shape, and of the colours family per colour."""
    from genrl.toy.evaluate import evaluate_pipeline

    return attribute_accuracy(lambda chosen: evaluate_pipeline(pipe, chosen, images_per_prompt=images_per_prompt,
                                                                 seed=50_000),
                              specs, images_per_prompt, {"single_object": lambda s: s.objects[0].shape,
                                                         "colors": lambda s: s.objects[0].color})


def attribute_accuracy(evaluate, specs, per_prompt: int, attributes: dict) -> dict[str, dict[str, float]]:
    """For each ``family: attribute_of(spec)`` of ``attributes``: the strict accuracy of ``evaluate(chosen)``
    (a report of ``per_prompt`` samples per spec, in order) on the family's specs, overall and per attribute value."""
    out: dict[str, dict[str, float]] = {}
    for family, attribute_of in attributes.items():
        chosen = [s for s in specs if s.family == family]
        if not chosen:
            continue
        report = evaluate(chosen)
        by: dict[str, list[float]] = defaultdict(list)
        expanded = [s for s in chosen for _ in range(per_prompt)]
        for spec, verdict in zip(expanded, report.verdicts, strict=True):
            by[attribute_of(spec)].append(verdict.strict)
        out[family] = {"overall": report.strict[family], **{k: float(np.mean(v)) for k, v in sorted(by.items())}}
    return out


def training_sampler_success(trainer, samples: int, strict_of=None) -> list[dict]:
    """Per prompt of the trainer's prompt set: the share of ``samples`` rollouts that are strictly right;
    ``strict_of(media, metadata)`` gives the strict verdicts of one prompt's samples (default: the toy verifier
    on images)."""
    strict_of = strict_of or _image_strict
    rows = []
    for i, (prompt, meta) in enumerate(zip(trainer.train_set.prompts, trainer.train_set.metadata, strict=True)):
        batch = trainer.rollouts.sample_batch(epoch=0, iteration=i, indices=[i] * samples)
        strict = strict_of(batch.media.as_float(), meta)
        rows.append({"prompt": prompt, "family": meta["spec"].family, "p": float(np.mean(strict))})
    return rows


def _image_strict(media, meta: dict) -> list[float]:
    from rewards.toyworld.verifier import verify

    return [verify(img, meta["spec"]).strict for img in media.tensor.permute(0, 2, 3, 1).numpy()]


def success_table(rows: list[dict], samples: int) -> dict[str, dict[str, float]]:
    """Per family (and overall): mean p, the shares of prompts with p = 0, 0 < p < 1, p = 1, and pass@samples."""
    groups: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        groups[r["family"]].append(r["p"])
    groups["all"] = [r["p"] for r in rows]
    table = {}
    for family, ps in groups.items():
        p = np.asarray(ps)
        table[family] = {"prompts": len(p), "mean_p": float(p.mean()), "never": float((p == 0).mean()),
                         "sometimes": float(((p > 0) & (p < 1)).mean()), "always": float((p == 1).mean()),
                         f"pass@{samples}": float((p > 0).mean())}
    return table


def _markdown(table: dict[str, dict[str, float]]) -> str:
    cols = list(next(iter(table.values())))
    lines = ["| family | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for family, row in table.items():
        lines.append(f"| {family} | " + " | ".join(f"{v:.0f}" if c == "prompts" else f"{v:.2f}"
                                                 for c, v in row.items()) + " |")
    return "\n".join(lines)


@contextmanager
def gates_trainer(config: str, overrides: list[str], model: str | None, prompts: str) -> Iterator:
    """A trainer of ``config`` whose prompt sets are both ``prompts`` (one x_T per sample, no logs); its scratch
    output folder is removed afterwards."""
    from genrl.trainer import Trainer

    scratch = tempfile.mkdtemp(prefix="toy_gates-")  # the trainer wants an output dir; nothing is kept
    try:
        cfg = load_config_or_exit(config, [*overrides, *([f"model.pretrained={model}"] if model else []),
                                           f"data.train_prompts={prompts}", f"data.test_prompts={prompts}",
                                           "sample.same_latent=false", "log.log_with=[]", f"log.output_dir={scratch}"])
        yield Trainer(cfg)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def gates_arguments(argv: list[str], doc: str, config: str, splits: list[str], per_prompt: tuple[str, int],
                    singles: tuple[str, int, str]) -> argparse.Namespace:
    """The gates commands' arguments: ``--config`` (its sampler is the training sampler), ``--model``, ``--split``
    (of ``splits``), ``--samples``, ``--<unit>-per-prompt`` (``per_prompt``: the unit and its default), the
    single-attribute count (``singles``: flag, default, help), ``--json`` and ``key=value`` overrides."""
    unit, per_prompt_default = per_prompt
    flag, singles_default, singles_help = singles
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=config, help="its sampler is the training sampler")
    parser.add_argument("--model", default=None, help="pipeline directory (default: the config's model.pretrained)")
    parser.add_argument("--split", default="test", choices=splits)
    parser.add_argument("--samples", type=int, default=16, help="training-sampler samples per prompt")
    parser.add_argument(f"--{unit}-per-prompt", type=int, default=per_prompt_default,
                        help="deterministic evaluation, per prompt")
    parser.add_argument(f"--{flag}", type=int, default=singles_default, help=singles_help)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_intermixed_args(argv)
    counts = (args.samples, getattr(args, f"{unit}_per_prompt"), getattr(args, flag.replace("-", "_")))
    if min(counts) < 1:
        parser.error(f"--samples, --{unit}-per-prompt and --{flag} must be >= 1")
    return args


def clip_world_gates_main(argv: list[str], doc: str, *, config: str, prefix: str, singles, evaluate, failure_kind,
                          strict_of, unit: str = "clips") -> int:
    """The gates command of a toy world whose samples are clips (audio, video): ``--config`` (its sampler is the
    training sampler), ``--model``, ``--split``, ``--samples``, ``--clips-per-prompt``, ``--single-clips``,
    ``--json`` and overrides. ``singles(pipe, n)`` gives the single-attribute table, ``evaluate(pipe, specs,
    clips_per_prompt)`` the standard evaluation's report, ``failure_kind(reason)`` the kind of a failed check,
    ``strict_of(media, metadata)`` one prompt's strict verdicts under the training sampler."""
    args = gates_arguments(argv, doc, config, ["train", "test"], ("clips", 4), ("single-clips", 8,
                           "deterministic clips per single-attribute prompt"))
    with gates_trainer(args.config, args.overrides, args.model, f"{prefix}:{args.split}") as trainer:
        import torch

        pipe = trainer.models.pipe
        pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            single = singles(pipe, args.single_clips)
            report = evaluate(pipe, [m["spec"] for m in trainer.train_set.metadata], args.clips_per_prompt)
        failures = Counter(failure_kind(v.reason) for v in report.verdicts if not v.strict)
        rows = training_sampler_success(trainer, args.samples, strict_of)
    table = success_table(rows, args.samples)
    print(f"## Single attributes ({args.single_clips} {unit} per prompt, every prompt of the family)")
    for family, scores in single.items():
        print(f"{family}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    print(f"\n## Standard evaluation ({args.clips_per_prompt} {unit} per prompt, split {args.split})")
    print(report.table())
    print("first failed check: " + ", ".join(f"{k} {n}" for k, n in failures.most_common()))
    print(f"\n## Training sampler, {args.samples} samples per prompt")
    print(_markdown(table))
    if args.json:
        args.json.write_text(json.dumps({"single_attributes": single, "standard": report.to_dict(),
                                         "failures": dict(failures), "per_prompt": rows, "success": table}, indent=2))
    return 0


def main(argv: list[str]) -> int:
    args = gates_arguments(argv, __doc__, str(ROOT / "configs" / "toy.yaml"), ["train", "test", "test_ood"],
                           ("images", 4), ("single-images", 16, "deterministic single-object images per prompt"))
    with gates_trainer(args.config, args.overrides, args.model, f"toy:{args.split}") as trainer:
        import torch

        from genrl.toy.evaluate import evaluate_pipeline
        from rewards.toyworld.prompts import split

        pipe, specs = trainer.models.pipe, list(split(args.split))
        with torch.no_grad():
            gate1 = single_object_gate(pipe, specs, args.single_images)
            report = evaluate_pipeline(pipe, specs, images_per_prompt=args.images_per_prompt, seed=0)
        expanded = [s for s in specs for _ in range(args.images_per_prompt)]
        failures = Counter(failure_kind(s, v.reason) for s, v in zip(expanded, report.verdicts, strict=True)
                           if not v.strict)
        confusions = Counter(c for s, v in zip(expanded, report.verdicts, strict=True) if not v.strict
                             for c in [shape_confusion(s, v.detections)] if c)
        rows = training_sampler_success(trainer, args.samples)
    table = success_table(rows, args.samples)
    print(f"## Gate 1: single objects, deterministic sampler ({args.single_images} images per prompt)")
    for family, accs in gate1.items():
        print(f"{family}: " + ", ".join(f"{k} {v:.3f}" for k, v in accs.items()))
    print(f"\n## Standard evaluation ({args.images_per_prompt} images per prompt, split {args.split})")
    print(report.table())
    print("failures by kind: " + ", ".join(f"{k} {n}" for k, n in failures.most_common()))
    print("multi-object images with the right count and wrong shapes (missing -> drawn): "
          + ", ".join(f"{k} {n}" for k, n in confusions.most_common()))
    print(f"\n## Gate 2: training sampler, {args.samples} samples per prompt")
    print(_markdown(table))
    if args.json:
        args.json.write_text(json.dumps({"single_object_gate": gate1, "standard": report.to_dict(),
                                         "failures": dict(failures),
                                         "shape_confusions": dict(confusions), "per_prompt": rows, "success": table},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
