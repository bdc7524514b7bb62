"""Per-epoch metrics: a JSONL file that survives resumes, and the reward-curve plot made from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from genrl.utils.files import atomic_write_path


class MetricsLog:
    """Append-only JSONL of one record per epoch (``{"epoch": e, ...}``), flushed at every write."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()

    def records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs after ``epoch`` (a resumed run re-does them), rewriting atomically."""
        kept = [r for r in self.records() if r.get("epoch", 0) <= epoch]
        with atomic_write_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept), encoding="utf-8")


def plot_reward_curve(records: list[dict], path: str | Path, train_key: str = "reward/mean") -> Path:
    """Plot the training reward and every ``eval/*`` metric against the epoch into a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    train = [(r["epoch"], r[train_key]) for r in records if train_key in r]
    if train:
        e, v = np.array(train).T
        ax.plot(e, v, label=f"train {train_key}", color="tab:blue", alpha=0.8)
    # headline metrics and GenEval-style family means; per-family curves stay in the JSONL log
    eval_keys = sorted({k for r in records for k in r
                        if k.startswith("eval/") and (k.count("/") == 1 or k.endswith("/family_mean"))})
    for key in eval_keys:
        points = [(r["epoch"], r[key]) for r in records if key in r]
        e, v = np.array(points).T
        ax.plot(e, v, marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
