"""Per-family held-out accuracy of several evaluations side by side (grouped bars), from their JSON files.

    python -m genrl.toy.evaluate --images-per-prompt 16 --json base.json
    python -m genrl.toy.evaluate --images-per-prompt 16 --lora RUN/final/lora --json run.json
    python bench/plot_family_scores.py base.json run.json --labels "base" "Flow-GRPO" --out scores.png

Each file is what ``genrl.toy.evaluate --json`` (or ``genrl.toy.evaluate_edit --json``, the edit world) writes; the last group of bars is the family mean (GenEval's
overall score). ``--metric partial`` plots partial credit instead of strict accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="+", default=None, help="one per file (default: the file names)")
    parser.add_argument("--metric", choices=("strict", "partial"), default="strict")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    labels = args.labels or [f.stem for f in args.files]
    if len(labels) != len(args.files):
        parser.error(f"--labels: {len(labels)} labels for {len(args.files)} files")
    reports = []
    for path in args.files:
        try:
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as err:
            parser.error(f"{path}: not a readable evaluation JSON ({type(err).__name__})")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(reports[0][args.metric])
    groups = [*families, "family mean"]
    width = 0.8 / len(reports)
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=120)
    for i, (label, report) in enumerate(zip(labels, reports, strict=True)):
        values = [report[args.metric][f] for f in families] + [report[f"overall_{args.metric}"]]
        ax.bar([g + (i - (len(reports) - 1) / 2) * width for g in range(len(groups))], values, width, label=label)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylabel(f"held-out {args.metric} accuracy")
    ax.set_ylim(0, 1.15 if len(reports) <= 4 else 1.3)  # room for the legend (one or two rows) above the bars
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(len(reports), 4))
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    plt.close(fig)
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
