"""Runs a user can trust, shown on real toy runs: one run per folder, checks before the model loads,
--resume that continues exactly or says why not, Ctrl-C that saves, outputs that follow the umask."""

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch
from test_run_lifecycle import fake_run, lock_holder, train_t2i
from test_trainer import CONFIGS, SCRIPT, _lora, make_trainer, tiny_overrides

from genrl.config import ConfigError
from genrl.grid import make_grid
from genrl.trainer.checkpoints import checkpoint_problem, has_manifest
from genrl.trainer.lifecycle import RunInterrupted
from rewards.toyworld.prompts import split

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}


def run_script(argv: list[str]) -> int:
    try:
        return train_t2i().main(argv)
    except SystemExit as stop:
        return stop.code


def snapshot(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def untimed(rs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rs]


def test_refusals_come_before_the_model_loads_and_change_nothing(tmp_path, monkeypatch, capsys):
    from genrl.trainer import model_state

    monkeypatch.setattr(model_state, "load_pipeline", lambda *a, **k: pytest.fail("the model loaded before the refusal"))
    run = fake_run(tmp_path / "run", epochs=())
    before = snapshot(run)
    with pytest.raises(ConfigError, match=f"{run} already holds a run.*--resume.*--overwrite"):
        make_trainer(tmp_path)
    with pytest.raises(ConfigError, match=f"{run} has no checkpoint"):
        make_trainer(tmp_path, resume="latest")
    holder = lock_holder(run)
    try:
        with pytest.raises(ConfigError, match=f"{run} is in use by process {holder.pid}"):
            make_trainer(tmp_path, **{"log.overwrite": True})
    finally:
        holder.kill()
        holder.wait()
    (run / ".genrl.lock").unlink()
    assert snapshot(run) == before
    # the script: one line, exit status 2
    capsys.readouterr()
    assert run_script(["--config", str(CONFIGS / "toy.yaml"), *tiny_overrides(tmp_path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and str(run) in errors[0]
    assert snapshot(run) == before


def test_a_start_that_fails_leaves_no_folder_behind(tmp_path, capsys):
    run = tmp_path / "run" / "a"  # neither folder exists
    with pytest.raises(ConfigError, match=f"{run} does not exist, so there is nothing to resume"):
        make_trainer(tmp_path, resume="latest", **{"log.output_dir": str(run)})
    assert not (tmp_path / "run").exists()
    capsys.readouterr()
    assert run_script(["--config", str(CONFIGS / "toy.yaml"), *tiny_overrides(tmp_path), "--resume"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and "does not exist" in errors[0] and not (tmp_path / "run").exists()
    # a set-up that fails after the lock was taken removes the folder it created
    with pytest.raises(ConfigError, match="data.train_prompts"):
        make_trainer(tmp_path, **{"log.output_dir": str(run), "data.train_prompts": str(tmp_path / "none.txt")})
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_that_does_not_fit_fails_in_one_line_naming_the_file(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from genrl.models.lora import lora_state_dict
    from genrl.trainer.lifecycle import RunPlan

    trainer = make_trainer(tmp_path)  # lora.rank=4
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save({name: obj.state_dict() for name, obj in trainer.checkpoints.objects.items()}, ckpt / "trainer_state.pt")
    wider = {k: torch.zeros(2 * v.shape[0], *v.shape[1:]) for k, v in lora_state_dict(trainer.unwrapped, "default").items()}
    save_file(wider, ckpt / "lora.safetensors")  # a checkpoint of another lora.rank
    trainer._plan = RunPlan(resume_from=ckpt)
    with pytest.raises(ConfigError) as refused:
        trainer._resume()
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"cannot resume from {ckpt / 'lora.safetensors'}: ")
    assert "size mismatch for" in message and "more)" in message
    # an error that is not about the checkpoint (here: out of memory) is not disguised as one
    monkeypatch.setattr(trainer.accelerator, "load_state", lambda path: (_ for _ in ()).throw(
        torch.OutOfMemoryError("CUDA out of memory")))
    with pytest.raises(torch.OutOfMemoryError):
        trainer._resume()
    trainer._lock.release()


def one_prompt_per_family(tmp_path):
    seen: dict[str, str] = {}
    for spec in split("test"):
        seen.setdefault(spec.family, spec.prompt)
    path = tmp_path / "families.txt"
    path.write_text("\n".join(seen.values()) + "\n")
    return path, len(seen)


def test_overwrite_starts_over_and_the_run_reports_what_a_user_looks_at(tmp_path, monkeypatch, capsys):
    """--overwrite, umask-following outputs, the time-budget progress bar, family-spread grids."""
    from genrl.trainer import loop

    run = fake_run(tmp_path / "run", epochs=(500, 600))  # later than the new run's: the rotation would keep them
    prompts, n_families = one_prompt_per_family(tmp_path)
    grids = []

    def recording_make_grid(images, captions, **kw):
        grids.append((captions, kw))
        return make_grid(images, captions, **kw)

    monkeypatch.setattr(loop, "make_grid", recording_make_grid)
    previous = os.umask(0o027)
    try:
        trainer = make_trainer(tmp_path, epochs=1000, time_budget_minutes=0.01, **{
            "log.overwrite": True, "log.export_merged": True, "data.test_prompts": str(prompts),
            "sample.eval_batch_size": n_families, "log.save_every": 0})
        trainer.train()
    finally:
        os.umask(previous)
    epochs = records(run)[-1]["epoch"]  # the epochs that fit in the 0.6 s budget
    assert [r["epoch"] for r in records(run)] == list(range(epochs + 1)) and epochs < 500
    assert [p.name for p in (run / "checkpoints").iterdir()] == [f"checkpoint-{epochs:06d}"]
    assert not (run / ".genrl.lock").exists()  # released at the end
    # everything the run wrote follows the umask: folders 0750, files 0640
    for path in [run / "final", *(run / "final").rglob("*"), *(run / "checkpoints").rglob("*"), run / "grids"]:
        expected = 0o750 if path.is_dir() else 0o640
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
    err = capsys.readouterr().err
    assert "100%" in err and f"epoch={epochs}" in err and "/1000" not in err
    # a grid at the start and at the end, every family, each caption with the verdicts, the epoch in the title
    assert [kw["title"].split(":")[0] for _, kw in grids] == ["epoch 0", f"epoch {epochs}"]
    captions = grids[-1][0]
    assert len(captions) == n_families
    assert all("strict pass" in c or "strict fail" in c for c in captions)
    assert (run / "grids" / f"eval-epoch-{epochs:06d}.png").is_file() and (run / "reward_curve.png").is_file()


def test_resume_skips_a_damaged_checkpoint_and_continues_exactly(tmp_path, caplog):
    """Also with EMA (updated every step) and tensorboard, which must not hold the re-done epoch twice."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    extra = {"train.ema": True, "train.ema_update_every": 1, "log.log_with": "[tensorboard]"}
    make_trainer(tmp_path, **extra).train()
    run = tmp_path / "run"
    expected_lora, expected_records = _lora(run), untimed(records(run))
    assert [r["epoch"] for r in expected_records] == [0, 1, 2]
    lora = run / "checkpoints" / "checkpoint-000002" / "lora.safetensors"
    assert has_manifest(lora.parent) and checkpoint_problem(lora.parent) is None
    lora.write_bytes(lora.read_bytes()[:100])
    kept = {name: (run / name).read_bytes() for name in ("config.yaml", "metrics.jsonl")}
    with pytest.raises(ConfigError, match=f"{lora} has 100 bytes"):
        make_trainer(tmp_path, resume=str(lora.parent), **extra)
    assert {name: (run / name).read_bytes() for name in kept} == kept
    with caplog.at_level(logging.WARNING, logger="genrl"):
        resumed = make_trainer(tmp_path, resume="latest", **extra)
        resumed.train()
    assert f"skipping checkpoint checkpoint-000002: {lora} has 100 bytes" in caplog.text
    # the EMA's last update used the optimizer step: d = (1 + 2) / (10 + 2) after step 2
    assert resumed.state.global_step == 2 and resumed.models.ema.cur_decay_value == pytest.approx(3 / 12)
    assert untimed(records(run)) == expected_records
    got = _lora(run)
    assert all(torch.equal(got[k], expected_lora[k]) for k in expected_lora)  # EMA weights, bit for bit
    assert checkpoint_problem(lora.parent) is None  # re-saved
    assert (run / "checkpoints" / ".damaged-checkpoint-000002" / "lora.safetensors").stat().st_size == 100  # kept aside
    events = EventAccumulator(str(run / "logs" / "genrl"))
    events.Reload()
    assert [e.step for e in events.Scalars("reward/mean")] == [1, 2]
    assert [e.step for e in events.Scalars("eval/strict")] == [0, 2]


def test_sigint_saves_a_checkpoint_and_exits_130_with_how_to_resume(tmp_path):
    run = tmp_path / "run"
    overrides = tiny_overrides(tmp_path, epochs=500, **{"log.save_every": 0})
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--config", str(CONFIGS / "toy.yaml"), *overrides],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (run / "metrics.jsonl").is_file() or len(records(run)) < 2:  # the loop is under way
        assert proc.poll() is None and time.monotonic() < deadline, "the run did not start training"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    epoch = records(run)[-1]["epoch"]
    assert 1 <= epoch < 500 and f"stopped by SIGINT after epoch {epoch} of 500" in last and "--resume" in last
    checkpoint = run / "checkpoints" / f"checkpoint-{epoch:06d}"
    assert has_manifest(checkpoint) and checkpoint_problem(checkpoint) is None and str(checkpoint) in last
    assert (run / "reward_curve.png").is_file() and not (run / "final").exists() and not (run / ".genrl.lock").exists()
    resumed = make_trainer(tmp_path, resume="latest", epochs=epoch + 1, **{"log.save_every": 0})
    resumed.train()
    assert [r["epoch"] for r in records(run)] == list(range(epoch + 2))


def with_a_peer(trainer, peer: list[float]) -> list:
    """Make ``trainer`` run as if a second process reported ``peer`` ([its stop signal or 0, out of time, prompts
    exhausted by banning]) to the epoch's all-reduce (max) of those flags; returns the list of the flags this
    process sent."""
    sent, reduce = [], trainer.accelerator.reduce

    def reduce_with_peer(tensor, reduction="mean", **kw):
        if reduction != "max":
            return reduce(tensor, reduction, **kw)
        sent.append(tensor.tolist())
        return torch.maximum(tensor, torch.tensor(peer, device=tensor.device))

    trainer.accelerator.reduce = reduce_with_peer
    return sent


def test_a_peer_out_of_time_ends_the_run_on_every_process(tmp_path):
    """Each process times its own epochs: one past the budget ends the run for all, in one collective."""
    trainer = make_trainer(tmp_path, time_budget_minutes=1000, **{"log.save_every": 0, "log.export_merged": False})
    sent = with_a_peer(trainer, [0.0, 1.0, 0.0])
    trainer.train()
    run = tmp_path / "run"
    assert sent == [[0.0, 0.0, 0.0]]  # one all-reduce in the epoch, of every flag; this process had time left
    assert [r["epoch"] for r in records(run)] == [0, 1] and "eval/strict" in records(run)[-1]
    assert (run / "checkpoints" / "checkpoint-000001").is_dir() and (run / "final" / "lora").is_dir()


def test_a_peer_whose_prompts_are_all_banned_ends_the_run_on_every_process(tmp_path):
    trainer = make_trainer(tmp_path, epochs=3, **{"log.save_every": 0, "log.export_merged": False})
    sent = with_a_peer(trainer, [0.0, 0.0, 1.0])
    trainer.train()
    run = tmp_path / "run"
    assert sent == [[0.0, 0.0, 0.0]] and [r["epoch"] for r in records(run)] == [0, 1]
    assert "eval/strict" in records(run)[-1] and (run / "final" / "lora").is_dir()


def test_a_signal_to_one_process_stops_every_process_after_the_same_epoch(tmp_path):
    trainer = make_trainer(tmp_path, epochs=3, **{"log.save_every": 0})
    sent = with_a_peer(trainer, [float(signal.SIGTERM), 0.0, 0.0])  # e.g. a scheduler preempting one rank
    with pytest.raises(RunInterrupted, match="stopped by SIGTERM after epoch 1 of 3") as stopped:
        trainer.train()
    assert sent == [[0.0, 0.0, 0.0]] and stopped.value.exit_code == 143


def test_a_signal_during_evaluation_stops_after_that_epoch(tmp_path):
    """Also: after an --overwrite run, the hint says to resume without --overwrite (the two contradict)."""
    trainer = make_trainer(tmp_path, **{"log.eval_every": 1, "log.save_every": 0, "log.overwrite": True})
    evaluate, calls = trainer.evaluator.evaluate, []

    def signalled_evaluate():
        calls.append(trainer.state.epoch)
        if trainer.state.epoch == 1:  # Ctrl-C while epoch 1 is being evaluated
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        return evaluate()

    trainer.evaluator.evaluate = signalled_evaluate
    with pytest.raises(RunInterrupted, match="after epoch 1 of 2") as stopped:
        trainer.train()
    run = tmp_path / "run"
    assert calls == [0, 1] and [r["epoch"] for r in records(run)] == [0, 1]
    assert (run / "checkpoints" / "checkpoint-000001").is_dir()
    assert "without --overwrite (log.overwrite=true) and with --resume" in str(stopped.value)


@pytest.mark.timeout(300)
def test_a_refused_lock_stops_every_process_of_a_launch(tmp_path):
    run = tmp_path / "run"
    holder = lock_holder(run)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           "29519", str(SCRIPT), "--config", str(CONFIGS / "toy.yaml"), *tiny_overrides(tmp_path)]
    try:
        result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=280, check=False)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [errors[0]] and f"process {holder.pid}" in errors[0]  # rank 0 says it; neither hangs
