"""Compare algorithms on the toy world under the same training-time budget.

    python bench/compare.py                                   # Flow-GRPO vs DiffusionNFT, 10 minutes each
    python bench/compare.py --minutes 5 --configs configs/toy.yaml configs/toy_fast_cps.yaml
    python bench/compare.py --plot-only                       # re-plot finished runs
    python bench/compare.py --plot-only --configs configs/toy.yaml --run-dirs bench/runs/toy_allsteps
    python bench/compare.py --plot-only --configs --run-dirs RUN_A RUN_B --key eval/strict/family_mean

Each config runs with ``time_budget_minutes`` (training time: sampling, rewards and updates;
evaluation excluded) into ``bench/runs/<config name>``. The held-out verifier accuracy of every
evaluation is plotted against training time and against generated samples, and the samples and
time needed to reach ``--target`` strict accuracy are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from genrl.config import load_config_or_exit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = ["configs/toy.yaml", "configs/toy_nft.yaml"]


def run_overrides(minutes: float, out: Path, extra: list[str]) -> list[str]:
    """The overrides of one timed run: the budget, its output directory, no export, then ``extra``."""
    return [f"time_budget_minutes={minutes}", "epochs=100000", f"log.output_dir={out}", "log.export_merged=false",
            "log.save_every=0", *extra]


def run(config: str, minutes: float, out: Path, extra: list[str]) -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "train_t2i.py"), "--config", str(ROOT / config),
           *run_overrides(minutes, out, extra)]
    subprocess.run(cmd, check=True)


def load(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def summarize(name: str, records: list[dict], target: float, key: str) -> dict:
    evals = [r for r in records if key in r]
    reached = next((r for r in evals if r[key] >= target), None)
    return {"run": name, "start": evals[0][key] if evals else None, "end": evals[-1][key] if evals else None,
            "best": max((r[key] for r in evals), default=None), "epochs": records[-1]["epoch"] if records else 0,
            "samples": records[-1].get("samples", 0) if records else 0,
            "train_s": records[-1].get("time/train_s", 0.0) if records else 0.0,
            "samples_to_target": reached.get("samples", 0) if reached else None,
            "seconds_to_target": reached.get("time/train_s", 0.0) if reached else None}


def plot(runs: dict[str, list[dict]], key: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=120)
    for name, records in runs.items():
        evals = [r for r in records if key in r]
        axes[0].plot([r.get("time/train_s", 0) / 60 for r in evals], [r[key] for r in evals], marker="o", label=name)
        axes[1].plot([r.get("samples", 0) for r in evals], [r[key] for r in evals], marker="o", label=name)
    axes[0].set_xlabel("training time (min, evaluation excluded)")
    axes[1].set_xlabel("generated training images")
    for ax in axes:
        ax.set_ylabel(f"held-out {key}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS, help="an empty list with --run-dirs: plot those only")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--target", type=float, default=0.3, help="strict accuracy for samples-to-target")
    parser.add_argument("--key", default="eval/strict")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "runs")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "runs" / "compare.png")
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--run-dirs", nargs="*", type=Path, default=[],
                        help="finished run directories to add to the plot and table, named by their directory")
    parser.add_argument("overrides", nargs="*", help="key=value overrides applied to every run")
    args = parser.parse_intermixed_args(argv)  # key=value overrides may come before or after options
    if not args.plot_only:  # every run's config, checked (in well under a second) before the first one trains
        for config in args.configs:
            load_config_or_exit(ROOT / config, run_overrides(args.minutes, args.out / Path(config).stem, args.overrides))
    runs = {}
    for config in args.configs:
        name = Path(config).stem
        if not args.plot_only:
            run(config, args.minutes, args.out / name, args.overrides)
        runs[name] = load(args.out / name)
    for run_dir in args.run_dirs:
        if not (run_dir / "metrics.jsonl").is_file():
            parser.error(f"--run-dirs: {run_dir} has no metrics.jsonl")
        runs[run_dir.name] = load(run_dir)
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot(runs, args.key, args.plot)
    for name, records in runs.items():
        print(json.dumps(summarize(name, records, args.target, args.key)))
    print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
