"""A run's folder, checkpoints, signals, progress bar, EMA schedule and grids, without a model.

The trainer-level checks (real runs, a real SIGINT) are in test_run_lifecycle_runs.py.
"""

import importlib.util
import io
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.training_utils import EMAModel

from genrl.config import ConfigError
from genrl.data import load_prompts, prompt_family
from genrl.grid import _caption_lines, make_grid, scored_caption, spread_over_families, verdict
from genrl.trainer.checkpoints import (
    MANIFEST,
    checkpoint_dir,
    checkpoint_problem,
    choose_checkpoint,
    has_manifest,
    list_checkpoints,
    save_atomically,
    write_manifest,
)
from genrl.trainer.lifecycle import (
    RunInterrupted,
    StopSignals,
    checkpoint_world,
    clear_run_records,
    plan_run,
    set_aside_damaged,
)
from genrl.trainer.metrics import (
    TrainingProgress,
    held_out_curve_figure,
    held_out_points,
    reward_curve_figure,
    save_figure,
)
from genrl.trainer.model_state import ema_step
from genrl.utils.files import (
    LOCK_FILE,
    FolderLock,
    FolderLocked,
    replace_dir_atomically,
    restore_interrupted_swap,
)

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_t2i.py"
HOLD_LOCK = ("import sys, time; from genrl.utils.files import FolderLock; lock = FolderLock(sys.argv[1]); lock.acquire(); "
             "print('locked', flush=True); time.sleep(120)")


def train_t2i():
    """scripts/train_t2i.py as a module."""
    spec = importlib.util.spec_from_file_location("train_t2i", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lock_holder(folder):
    """A separate live process holding the lock of ``folder``."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------------- the lock
def test_a_live_lock_is_refused_naming_its_owner_and_a_dead_one_is_taken_over(tmp_path):
    holder = lock_holder(tmp_path)
    try:
        with pytest.raises(FolderLocked, match=f"process {holder.pid} on {socket.gethostname()}"):
            FolderLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    # the killed holder left its lock file, naming a pid that no longer runs: taken over
    assert (tmp_path / LOCK_FILE).read_text().split()[0] == str(holder.pid)
    lock = FolderLock(tmp_path)
    assert lock.acquire() == f"{holder.pid} {socket.gethostname()}"
    assert (tmp_path / LOCK_FILE).read_text().split() == [str(os.getpid()), socket.gethostname()]
    with pytest.raises(FolderLocked):  # held: a second lock, even in this process, is refused
        FolderLock(tmp_path).acquire()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()
    again = FolderLock(tmp_path)
    assert again.acquire() is None
    again.release()


def test_without_file_locks_the_recorded_pid_decides(tmp_path, monkeypatch):
    import errno

    from genrl.utils import files

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(files.fcntl, "flock", no_flock)
    (tmp_path / LOCK_FILE).write_text(f"{dead_pid()} {socket.gethostname()}\n")
    lock = FolderLock(tmp_path)
    lock.acquire()
    lock.release()
    (tmp_path / LOCK_FILE).write_text(f"{os.getppid()} {socket.gethostname()}\n")  # a live process
    with pytest.raises(FolderLocked, match=f"process {os.getppid()}.*delete"):
        FolderLock(tmp_path).acquire()


# ----------------------------------------------------------------------------------- the run folder
def fake_run(folder, epochs=(1, 2)):
    """A run folder as the trainer leaves it: records and checkpoints with manifests."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text("seed: 1\n")
    (folder / "metrics.jsonl").write_text('{"epoch": 0}\n')
    for epoch in epochs:
        ckpt = checkpoint_dir(folder / "checkpoints", epoch)
        ckpt.mkdir(parents=True)
        (ckpt / "lora.safetensors").write_bytes(os.urandom(2048))
        (ckpt / "trainer_state.pt").write_bytes(os.urandom(512))
        write_manifest(ckpt)
    return folder


def test_a_folder_holding_a_run_is_refused_with_the_choices(tmp_path):
    run = fake_run(tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        plan_run(run, resume=None, overwrite=False)
    message = str(err.value)
    assert "\n" not in message and str(run) in message
    for choice in ("--resume", "log.output_dir", "--overwrite", "log.overwrite=true"):
        assert choice in message
    # an empty folder, or one holding only a lock file, is free
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / LOCK_FILE).write_text("1 host\n")
    assert plan_run(tmp_path / "empty", None, False).clear == []
    assert plan_run(tmp_path / "missing", None, False).resume_from is None


def test_overwrite_deletes_only_the_runs_records(tmp_path):
    run = fake_run(tmp_path / "run")
    (run / ".metrics.jsonl.x1y2.jsonl").write_text("")  # an atomic write a crash interrupted
    plan = plan_run(run, None, overwrite=True)
    assert sorted(p.name for p in plan.clear) == [".metrics.jsonl.x1y2.jsonl", "checkpoints", "config.yaml",
                                                  "metrics.jsonl"]
    assert any("deleting" in note for note in plan.notes)
    assert (run / "checkpoints").is_dir()  # planning deletes nothing
    clear_run_records(plan.clear)
    assert list(run.iterdir()) == []
    # files genrl did not write are never deleted
    fake_run(run)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="notes.txt"):
        plan_run(run, None, overwrite=True)
    with pytest.raises(ConfigError, match="contradict"):
        plan_run(run, "latest", overwrite=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty.*notes.txt"):
        plan_run(mine, None, overwrite=False)


def test_the_overwrite_flag_is_the_config_key():
    assert train_t2i().parse_args(["--overwrite", "epochs=3"])[1] == ["epochs=3", "log.overwrite=true"]
    assert train_t2i().parse_args(["epochs=3"])[1] == ["epochs=3"]


def test_resume_needs_a_checkpoint(tmp_path):
    for folder, why in ((tmp_path / "missing", "does not exist"), (fake_run(tmp_path / "run", epochs=()), "no checkpoint")):
        with pytest.raises(ConfigError, match=f"{folder}.*{why}.*without --resume"):
            plan_run(folder, "latest", False)


# ----------------------------------------------------------------------------------- checkpoints
def test_the_manifest_catches_truncated_replaced_and_missing_files(tmp_path):
    run = fake_run(tmp_path / "run", epochs=(1,))
    ckpt = checkpoint_dir(run / "checkpoints", 1)
    assert checkpoint_problem(ckpt) is None and has_manifest(ckpt)
    lora = ckpt / "lora.safetensors"
    original = lora.read_bytes()
    lora.write_bytes(original[:1000])
    assert "lora.safetensors has 1000 bytes" in checkpoint_problem(ckpt)
    lora.write_bytes(bytes([original[0] ^ 1]) + original[1:])  # same size, one bit flipped
    assert "lora.safetensors does not match the sha256" in checkpoint_problem(ckpt)
    lora.unlink()
    assert "lora.safetensors is missing" in checkpoint_problem(ckpt)
    (ckpt / MANIFEST).write_text("{not json")
    assert "manifest.json is unreadable" in checkpoint_problem(ckpt)


def test_resume_latest_falls_back_to_the_newest_intact_checkpoint(tmp_path):
    run = fake_run(tmp_path / "run", epochs=(1, 2, 3))
    state = checkpoint_dir(run / "checkpoints", 3) / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:-1])
    plan = plan_run(run, "latest", False)
    assert plan.resume_from == checkpoint_dir(run / "checkpoints", 2)
    assert any("checkpoint-000003" in n and "trainer_state.pt" in n for n in plan.notes)
    # named explicitly, the damaged one fails naming the file
    with pytest.raises(ConfigError, match="trainer_state.pt has 511 bytes"):
        plan_run(run, str(state.parent), False)
    lora = checkpoint_dir(run / "checkpoints", 2) / "lora.safetensors"
    lora.write_bytes(b"")
    assert plan_run(run, "latest", False).resume_from == checkpoint_dir(run / "checkpoints", 1)
    (checkpoint_dir(run / "checkpoints", 1) / "lora.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="no checkpoint of .* is intact"):
        plan_run(run, "latest", False)


def test_a_checkpoint_without_a_manifest_is_used_with_a_warning(tmp_path):
    run = fake_run(tmp_path / "run", epochs=(1,))
    ckpt = checkpoint_dir(run / "checkpoints", 1)
    (ckpt / MANIFEST).unlink()
    path, notes = choose_checkpoint("latest", run)
    assert path == ckpt and len(notes) == 1 and "cannot be verified" in notes[0]


def test_an_explicit_resume_never_mixes_runs_or_discards_later_epochs(tmp_path):
    run = fake_run(tmp_path / "run", epochs=(1, 2))
    older = checkpoint_dir(run / "checkpoints", 1)
    with pytest.raises(ConfigError, match="older than checkpoint-000002"):
        plan_run(run, str(older), False)
    assert plan_run(run, str(checkpoint_dir(run / "checkpoints", 2)), False).resume_from is not None
    other = fake_run(tmp_path / "other", epochs=())
    with pytest.raises(ConfigError, match="another run"):
        plan_run(other, str(older), False)
    assert plan_run(tmp_path / "fork", str(older), False).resume_from == older  # into a new folder: fine


class FakeAccelerator:
    """What save_atomically needs of accelerate: one process whose save_state writes a file."""

    is_main_process = True

    def wait_for_everyone(self):
        pass

    def save_state(self, folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "trainer_state.pt").write_bytes(os.urandom(64))


def test_a_resume_past_a_damaged_checkpoint_sets_it_aside_and_pruning_keeps_the_new_one(tmp_path, caplog):
    run = fake_run(tmp_path / "run", epochs=(10, 13, 20))
    root = run / "checkpoints"
    (checkpoint_dir(root, 20) / "lora.safetensors").write_bytes(b"")  # damaged
    plan = plan_run(run, "latest", False)
    assert plan.resume_from == checkpoint_dir(root, 13) and plan.set_aside == [checkpoint_dir(root, 20)]
    assert checkpoint_dir(root, 20).is_dir()  # planning moves nothing
    with caplog.at_level(logging.WARNING, logger="genrl"):
        set_aside_damaged(plan.set_aside)
    assert "moved the damaged checkpoint" in caplog.text and (root / ".damaged-checkpoint-000020").is_dir()
    assert save_atomically(FakeAccelerator(), root, 14, keep=1) == checkpoint_dir(root, 14)
    assert sorted(p.name for p in root.iterdir()) == [".damaged-checkpoint-000020", "checkpoint-000014"]


def test_pruning_never_counts_or_removes_checkpoints_newer_than_the_one_saved(tmp_path):
    root = fake_run(tmp_path / "run", epochs=(10, 13, 20)) / "checkpoints"
    save_atomically(FakeAccelerator(), root, 14, keep=2)
    assert [p.name for p in list_checkpoints(root)] == ["checkpoint-000013", "checkpoint-000014", "checkpoint-000020"]
    save_atomically(FakeAccelerator(), root, 15, keep=1)
    assert [p.name for p in list_checkpoints(root)] == ["checkpoint-000015", "checkpoint-000020"]


def test_a_replacement_a_crash_interrupted_is_put_back(tmp_path, caplog):
    root = fake_run(tmp_path / "run", epochs=(1, 2)) / "checkpoints"
    # a crash between the renames of swap_into_place, while epoch 2 was saved again
    checkpoint_dir(root, 2).rename(root / ".old-checkpoint-000002")
    with caplog.at_level(logging.WARNING, logger="genrl"):
        assert list_checkpoints(root) == [checkpoint_dir(root, 1), checkpoint_dir(root, 2)]
    assert "restored" in caplog.text and checkpoint_problem(checkpoint_dir(root, 2)) is None
    # final/lora: the next replacement puts the previous version back before it swaps
    lora = tmp_path / "final" / "lora"
    replace_dir_atomically(lora, lambda d: (d / "w.bin").write_bytes(b"1"))
    lora.rename(lora.with_name(".old-lora"))
    assert restore_interrupted_swap(lora) and (lora / "w.bin").read_bytes() == b"1"
    assert not restore_interrupted_swap(lora)  # nothing left to put back
    lora.rename(lora.with_name(".old-lora"))
    replace_dir_atomically(lora, lambda d: (d / "w.bin").write_bytes(b"2"))
    assert (lora / "w.bin").read_bytes() == b"2" and not lora.with_name(".old-lora").exists()


def test_a_run_folder_given_as_the_checkpoint_is_named_as_such(tmp_path):
    run = fake_run(tmp_path / "run", epochs=(1,))
    for output_dir in (run, tmp_path / "new"):  # the same folder, and a new one
        with pytest.raises(ConfigError, match=f"{run} is a run folder, not a checkpoint; did you mean "
                                              f"`log.output_dir={run} --resume`"):
            plan_run(output_dir, str(run), False)
    (tmp_path / "stuff").mkdir()
    with pytest.raises(ConfigError, match="stuff is not a genrl checkpoint"):
        plan_run(tmp_path / "new", str(tmp_path / "stuff"), False)
    renamed = checkpoint_dir(run / "checkpoints", 1).rename(tmp_path / "best")  # a renamed checkpoint still is one
    assert plan_run(tmp_path / "new", str(renamed), False).resume_from == renamed


def test_a_damaged_trainer_state_does_not_say_its_world_whatever_its_bytes(tmp_path):
    # damaged bytes fail torch's unpickler in many ways (IndexError, EOFError, UnpicklingError, ...): the world
    # check steps aside (None) and the resume's own load names the damage
    rng = np.random.default_rng(0)
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    for size in (1, 7, 64, 512, 4096):
        for _ in range(40):
            (ckpt / "trainer_state.pt").write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
            assert checkpoint_world(ckpt) is None
    torch.save({"train_state": {"num_processes": 2, "batch_size": 4}}, ckpt / "trainer_state.pt")
    assert checkpoint_world(ckpt) == (2, 4)


def test_a_resume_with_a_changed_config_is_refused_naming_the_keys(tmp_path):
    from genrl.config import load_config, to_yaml

    run = fake_run(tmp_path / "run", epochs=(1,))
    (run / "config.yaml").write_text(to_yaml(load_config(None, [f"log.output_dir={run}"])))
    changed = load_config(None, ["train.learning_rate=1e-3", "seed=1", "reward.weights={brightness: 1.0}",
                                 "epochs=400", "time_budget_minutes=5", "cpu_threads=1", "log.eval_every=3",
                                 "sample.eval_batch_size=3", f"log.output_dir={tmp_path / 'fork'}"])
    with pytest.raises(ConfigError) as refused:
        plan_run(run, "latest", False, changed)
    message = str(refused.value)
    assert "\n" not in message and str(run / "config.yaml") in message
    assert "train.learning_rate (0.0003 -> 0.001)" in message and "seed (42 -> 1)" in message
    assert 'reward.weights ({"toy_verifier": 1.0} -> {"brightness": 1.0})' in message
    for free in ("epochs (", "time_budget_minutes (", "cpu_threads (", "log.eval_every", "eval_batch_size ("):
        assert free not in message
    with pytest.raises(ConfigError, match="train.learning_rate"):  # a fork from its checkpoint too
        plan_run(tmp_path / "fork", str(checkpoint_dir(run / "checkpoints", 1)), False, changed)
    same = load_config(None, ["epochs=400", "time_budget_minutes=5", f"log.output_dir={run}"])
    assert plan_run(run, "latest", False, same).resume_from == checkpoint_dir(run / "checkpoints", 1)


def test_a_resume_on_another_number_of_processes_must_keep_each_iterations_images(tmp_path):
    from genrl.config import load_config, to_yaml

    run = fake_run(tmp_path / "run", epochs=(1,))
    (run / "config.yaml").write_text(to_yaml(load_config(None, [f"log.output_dir={run}", "sample.batch_size=4"])))
    ckpt = checkpoint_dir(run / "checkpoints", 1)
    torch.save({"train_state": {"epoch": 1, "num_processes": 2, "batch_size": 4}}, ckpt / "trainer_state.pt")
    write_manifest(ckpt)

    def plan(processes, batch):
        return plan_run(run, "latest", False, load_config(None, [f"log.output_dir={run}",
                                                                 f"sample.batch_size={batch}"]), processes)

    assert plan(2, 4).notes == []  # the processes that wrote it
    assert "sample.batch_size 4 -> 8 keeps 8 images per sampling iteration" in plan(1, 8).notes[0]
    assert "4 -> 2" in plan(4, 2).notes[0]
    with pytest.raises(ConfigError, match=r"written by 2 processes x sample.batch_size=4 = 8 images per sampling "
                                          r"iteration; on 1 processes set sample.batch_size=8"):
        plan(1, 4)
    with pytest.raises(ConfigError, match="on 3 processes use a number of processes that divides 8"):
        plan(3, 4)
    with pytest.raises(ConfigError, match=r"sample.batch_size \(4 -> 8\) on the same 2 processes"):
        plan(2, 8)


# ----------------------------------------------------------------------------------- signals
def test_the_first_signal_asks_to_stop_and_a_second_one_aborts(caplog):
    previous = signal.getsignal(signal.SIGINT)
    with caplog.at_level(logging.WARNING, logger="genrl"), StopSignals(repeat_window_s=0.3) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # handlers run between bytecodes
        assert stop.requested and stop.name == "SIGINT"
        assert caplog.text == ""  # the handler only records the request; the loop reports it
        stop.announce()
        stop.announce()
        assert caplog.text.count("SIGINT: stopping once the current epoch is done") == 1
        os.kill(os.getpid(), signal.SIGTERM)  # a launcher forwarding the same Ctrl-C: still one request
        time.sleep(0.05)
        time.sleep(0.3)
        with pytest.raises(RunInterrupted, match="SIGTERM again: aborted") as aborted:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
    assert aborted.value.exit_code == 128 + signal.SIGTERM  # 143, what the shell reports for SIGTERM
    assert signal.getsignal(signal.SIGINT) is previous


# ----------------------------------------------------------------------------------- progress
def test_progress_counts_the_time_budget_and_ends_at_100_percent():
    out = io.StringIO()
    progress = TrainingProgress(epochs=1000, budget_minutes=10, epoch=3, train_seconds=30.5, file=out)
    assert (progress.bar.total, progress.bar.n) == (600, 30)
    progress.advance(4, 41.9, {"reward": "0.500"})
    assert progress.bar.n == 41
    progress.advance(5, 612.0, {"reward": "0.510"})  # the budget check overshoots by part of an epoch
    assert progress.bar.n == 600
    progress.finish()
    text = out.getvalue()
    assert "100%" in text and "600/600" in text and "epoch=5" in text and "1000" not in text
    # without a budget it counts epochs; finish fills it even when the run ended early
    out = io.StringIO()
    progress = TrainingProgress(epochs=20, budget_minutes=0, epoch=0, train_seconds=0.0, file=out)
    progress.advance(7, 3.0, {})
    assert (progress.bar.total, progress.bar.n) == (20, 7)
    progress.finish()
    assert "20/20" in out.getvalue()


# ----------------------------------------------------------------------------------- EMA
def reference_ema(values: list[torch.Tensor], every: int, cap: float) -> tuple[list[float], torch.Tensor]:
    """flow_grpo's EMAModuleWrapper, written out: after optimizer step s (1, 2, ...), when (s + 1) % every
    == 0, ema += (1 - d) (p - ema) with d = min((1 + s) / (10 + s), cap)."""
    ema, decays = values[0].clone(), []
    for s, p in enumerate(values[1:], start=1):
        if (s + 1) % every == 0:
            d = min((1 + s) / (10 + s), cap)
            decays.append(d)
            ema = ema + (1 - d) * (p - ema)
    return decays, ema


def test_ema_follows_the_reference_warm_up_by_optimizer_step():
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    ema = EMAModel([param], decay=0.9, min_decay=0.0, update_after_step=0, use_ema_warmup=False)
    values = [torch.zeros(5, dtype=torch.float64)] + [torch.randn(5, dtype=torch.float64) for _ in range(200)]
    decays = []
    for s, value in enumerate(values[1:], start=1):
        param.data.copy_(value)
        if ema_step(ema, [param], s, every=8):
            decays.append(ema.cur_decay_value)
    expected_decays, expected = reference_ema(values, every=8, cap=0.9)
    assert decays == pytest.approx(expected_decays, abs=1e-12)
    assert decays[0] == pytest.approx(8 / 17)  # the first update, after step 7, is not a copy
    assert expected_decays.index(0.9) == 10  # step 87, the first update at s >= 80
    torch.testing.assert_close(ema.shadow_params[0], expected)
    # the step lives in the EMA's state_dict, which checkpoints carry
    assert ema.state_dict()["optimization_step"] == 200


# ----------------------------------------------------------------------------------- grids and curves
def test_grid_prompts_cover_every_family_and_captions_carry_the_verdict():
    test = load_prompts("toy:test")
    families = [prompt_family(m) for m in test.metadata]
    picked = spread_over_families(families, 16)
    assert len(picked) == 16 and {families[i] for i in picked} == set(families)
    assert [families[i] for i in picked] == sorted((families[i] for i in picked), key=families.index)
    assert spread_over_families([None] * 3, 16) == [0, 1, 2]
    assert (verdict(1.0), verdict(0.0), verdict(0.5), verdict(float("nan"))) == ("pass", "fail", "0.50", "n/a")
    caption = scored_caption("a photo of a red circle left of a blue square and a green triangle",
                             {"strict": 0.0, "partial": 0.5})
    # the prompt is cut to fit, the verdict never
    assert _caption_lines(caption, 14, 3) == ["a photo of a", "strict fail,", "partial 0.50"]
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    with_title = make_grid(images, [caption, caption], columns=2, cell=64, title="epoch 3")
    assert with_title.size[1] > make_grid(images, [caption, caption], columns=2, cell=64).size[1]


def test_the_reward_curve_has_a_title_and_its_legend_covers_no_curve():
    records = [{"epoch": e, "reward/mean": 0.1 * e, **({"eval/strict": 0.2} if e % 5 == 0 else {})}
               for e in range(21)]
    fig = reward_curve_figure(records, title="run: reward")
    ax = fig.axes[0]
    assert ax.get_title() == "run: reward"
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert not legend.overlaps(ax.get_window_extent())


def test_the_held_out_curve_puts_each_evaluation_at_its_images_and_minutes(tmp_path):
    # epoch 0: evaluation only; then 32 images and 6 s per epoch, an evaluation every 2 epochs
    records = [{"epoch": 0, "eval/strict/family_mean": 0.40}]
    for e in range(1, 5):
        records.append({"epoch": e, "samples": 32 * e, "time/train_s": 6.0 * e,
                        **({"eval/strict/family_mean": 0.40 + 0.05 * e} if e % 2 == 0 else {})})
    points = held_out_points(list(reversed(records)), "eval/strict/family_mean")  # any order in, epoch order out
    np.testing.assert_allclose(points, [[0, 0.0, 0.40], [64, 0.2, 0.50], [128, 0.4, 0.60]])
    fig = held_out_curve_figure(records)
    base_lines = [line for ax in fig.axes for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(base_lines) == 2 and all(line.get_ydata()[0] == 0.40 for line in base_lines)
    assert [ax.get_xlabel() for ax in fig.axes] == ["images generated", "training minutes"]
    assert save_figure(fig, tmp_path / "curve.png").stat().st_size > 0
    with pytest.raises(ValueError, match="eval/partial"):
        held_out_curve_figure(records, "eval/partial")


def test_the_reward_curve_selects_agg_before_pyplot_loads(tmp_path):
    code = ("import sys, matplotlib\n"
            "calls = []\n"
            "use = matplotlib.use\n"
            "matplotlib.use = lambda *a, **k: (calls.append('matplotlib.pyplot' in sys.modules), use(*a, **k))\n"
            "from genrl.trainer.metrics import plot_reward_curve\n"
            f"plot_reward_curve([{{'epoch': 0, 'reward/mean': 0.5}}], {str(tmp_path / 'curve.png')!r})\n"
            "print(calls[0], matplotlib.get_backend().lower())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "agg"]  # pyplot was not loaded when Agg was chosen
    assert (tmp_path / "curve.png").is_file()


# ----------------------------------------------------------------------------------- permissions
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_folder_replaced_atomically_follows_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        target = replace_dir_atomically(tmp_path / "final" / "lora", lambda d: (d / "w.bin").write_bytes(b"1"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((target / "w.bin").stat().st_mode) == 0o666 & ~umask
