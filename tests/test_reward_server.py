"""The reward server in a real process on 127.0.0.1, and the retrying client reward."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.tiny_models import save_tiny_clap
from test_toy_rewards import _scenes

from rewards import build_reward
from rewards.server import make_server

HELPERS = Path(__file__).resolve().parent / "helpers"


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, *args, "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    assert line.startswith("serving"), line
    return proc, line.split(" on ")[1].strip()


def test_served_reward_matches_the_local_one():
    proc, url = _start(["-m", "rewards.server", "toy_verifier", "--option", "mode=partial"])
    try:
        specs, images = _scenes(6)
        prompts = [s.prompt for s in specs]
        metadata = [{"spec": s} for s in specs]  # PromptSpec objects travel as JSON dicts
        remote = build_reward("remote", url=url, batch_size=4)
        local = build_reward("toy_verifier", mode="partial")
        out = remote(images, prompts, metadata)
        torch.testing.assert_close(out.scores, local(images, prompts, metadata).scores)
        assert len(out.info["partial"]) == 6  # info lists are concatenated over the two requests
        with pytest.raises(ValueError, match="rejected"):  # 4xx is the caller's fault and is not retried
            remote(images[:2], ["a photo of a unicorn", "x"])
    finally:
        proc.kill()


def test_served_audio_reward_matches_the_local_one(tmp_path):
    save_tiny_clap(tmp_path)
    proc, url = _start(["-m", "rewards.server", "clap", "--option", f"model={tmp_path}",
                        "--option", "sample_rate=16000"])
    try:
        waves = torch.randn(3, 16_000, generator=torch.Generator().manual_seed(0)) * 0.1
        prompts = ["a dog barking", "rain on a window", "a piano melody"]
        remote = build_reward("remote", url=url, modality="audio", batch_size=2)
        local = build_reward("clap", model=str(tmp_path), sample_rate=16_000)
        torch.testing.assert_close(remote(waves, prompts).scores, local(waves, prompts).scores)
        with pytest.raises(ValueError, match="needs 'audio'"):  # an image client on an audio server
            build_reward("remote", url=url)(torch.rand(1, 3, 8, 8), ["x"])
    finally:
        proc.kill()


def test_a_server_dying_mid_request_gives_a_clear_error_not_a_hang():
    proc, url = _start([str(HELPERS / "dying_reward_server.py"), "dies_mid_request"])
    _, images = _scenes(2)
    remote = build_reward("remote", url=url, timeout=10, retries=2, backoff=0.05)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=f"reward server {url} failed after 3 attempts"):
        remote(images, ["a", "b"])
    assert time.monotonic() - start < 10
    assert proc.wait(timeout=10) == 3


def test_server_binds_loopback_unless_allowed():
    with pytest.raises(PermissionError, match="allow_remote"):
        make_server("brightness", host="0.0.0.0")
    server = make_server("brightness", host="127.0.0.1", port=0)
    server.server_close()
