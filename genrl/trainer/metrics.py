"""Per-epoch metrics: a JSONL file that survives resumes, the reward-curve plot made from it, and the
progress bar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from genrl.utils.files import atomic_write_path
from genrl.utils.plotting import pyplot


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


class TrainingProgress:
    """The run's progress bar. With a time budget (``time_budget_minutes``, which is what ends such a
    run) it counts training seconds against the budget, with the epoch beside it; otherwise epochs.
    :meth:`finish` fills it to 100 %, however the run reached its end.
    """

    def __init__(self, *, epochs: int, budget_minutes: float, epoch: int, train_seconds: float,
                 disable: bool = False, file=None) -> None:
        self.by_time = budget_minutes > 0
        total = max(1, round(60 * budget_minutes)) if self.by_time else epochs
        # a rate in seconds per second says nothing: the time form shows elapsed/budget and the time left
        time_format = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]"
        self.bar = tqdm(total=total, initial=self._position(epoch, train_seconds, total), disable=disable,
                        file=file, desc="training time" if self.by_time else "epochs", unit="epoch",
                        bar_format=time_format if self.by_time else None, dynamic_ncols=True)

    def _position(self, epoch: int, train_seconds: float, total: int) -> int:
        return min(int(train_seconds), total) if self.by_time else epoch

    def advance(self, epoch: int, train_seconds: float, shown: dict[str, str]) -> None:
        """Move to ``epoch`` epochs / ``train_seconds`` of training and show ``shown`` in the postfix."""
        self.bar.update(self._position(epoch, train_seconds, self.bar.total) - self.bar.n)
        self.bar.set_postfix({"epoch": epoch, **shown} if self.by_time else shown)

    def finish(self) -> None:
        """The run is complete: 100 %."""
        self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()

    def close(self) -> None:
        """The run stopped early: leave the bar where it is."""
        self.bar.close()


def reward_curve_figure(records: list[dict], train_key: str = "reward/mean", title: str | None = None):
    """The training reward and every headline ``eval/*`` metric against the epoch (a matplotlib figure).

    The legend sits to the right of the axes, so it never hides a curve.
    """
    fig, ax = pyplot().subplots(figsize=(7.5, 3.6), dpi=120)
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
    ax.set_title(title or "training reward and evaluation by epoch", fontsize=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def held_out_points(records: list[dict], key: str) -> np.ndarray:
    """``(images generated, training minutes, value)`` of every record holding ``key``, in epoch order.

    An evaluation record carries the run's cumulative ``samples`` and ``time/train_s`` at that epoch, or
    inherits them from the latest record before it (epoch 0, before any image: 0 and 0).
    """
    points, images, seconds = [], 0, 0.0
    for r in sorted(records, key=lambda r: r.get("epoch", 0)):
        images, seconds = r.get("samples", images), r.get("time/train_s", seconds)
        if key in r:
            points.append((images, seconds / 60.0, r[key]))
    return np.array(points, dtype=float).reshape(-1, 3)


def held_out_curve_figure(records: list[dict], key: str = "eval/strict/family_mean", base: float | None = None,
                          title: str | None = None):
    """The held-out metric ``key`` against images generated and against training minutes (two panels).

    ``base`` (default: the value at the first evaluation, epoch 0, before any update) is drawn as a dashed line.
    """
    points = held_out_points(records, key)
    if not len(points):
        raise ValueError(f"no record holds {key!r}")
    base = points[0, 2] if base is None else base
    fig, axes = pyplot().subplots(1, 2, figsize=(9, 3.4), dpi=120, sharey=True)
    for ax, column, label in zip(axes, (0, 1), ("images generated", "training minutes")):
        ax.plot(points[:, column], points[:, 2], marker="o", markersize=3, label=key)
        ax.axhline(base, color="gray", linestyle="--", label=f"base {base:.3f}")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out strict accuracy" if "strict" in key else key)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title or f"{key} during training", fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as a PNG atomically and close it."""
    path = Path(path)
    with atomic_write_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")  # "tight": a legend outside the axes stays in
    pyplot().close(fig)
    return path


def plot_reward_curve(records: list[dict], path: str | Path, train_key: str = "reward/mean",
                      title: str | None = None) -> Path:
    """:func:`reward_curve_figure` written as a PNG (atomically)."""
    return save_figure(reward_curve_figure(records, train_key, title), path)
