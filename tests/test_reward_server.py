"""The reward server in a real process on 127.0.0.1, and the retrying client reward."""

import base64
import io
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from helpers.tiny_models import save_tiny_clap
from PIL import Image
from test_toy_rewards import _scenes

from rewards import build_reward
from rewards.media import Media
from rewards.remote import PayloadTooLarge, decode_image
from rewards.server import main as server_main
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
        # Media carries its rate: stereo 16-bit clips at the served rate score as their mono float mix does
        clips = Media(torch.stack([waves, waves * 0.5], dim=1), "audio", sample_rate=16_000).stored()
        stated = build_reward("remote", url=url, modality="audio", sample_rate=16_000)
        torch.testing.assert_close(stated(clips, prompts).scores, local(clips.as_float().tensor.mean(1), prompts).scores)
        with pytest.raises(ValueError, match="expects audio at 16000 Hz; the request's is at 8000 Hz"):
            build_reward("remote", url=url, modality="audio", sample_rate=8000)(waves, prompts)
        with pytest.raises(ValueError, match="expects audio at 16000 Hz .its sample_rate option.; the media is at 8000"):
            stated(Media(clips.tensor, "audio", sample_rate=8000), prompts)
        with pytest.raises(ValueError, match="reward 'clap' scores audio, not image"):
            local(Media(torch.rand(3, 3, 8, 8), "image"), prompts)
    finally:
        proc.kill()


def test_served_video_reward_matches_the_local_one():
    proc, url = _start(["-m", "rewards.server", "frame_mean", "--option", "reward=jpeg_compressibility",
                        "--option", "stride=2"])
    try:
        clips = Media(torch.rand(3, 5, 3, 8, 12, generator=torch.Generator().manual_seed(0)), "video", fps=8).stored()
        prompts = ["a", "b", "c"]
        remote = build_reward("remote", url=url, modality="video", batch_size=2)
        local = build_reward("frame_mean", reward="jpeg_compressibility", stride=2)
        torch.testing.assert_close(remote(clips, prompts).scores, local(clips, prompts).scores)
        with pytest.raises(ValueError, match=r"videos\[0\]: expected a clip as 'F;"):
            remote._post({"videos": ["not a clip"], "prompts": ["a"]})
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


@contextmanager
def serving(reward: str = "brightness", **limits):
    """A server for ``reward`` in a thread of this process: (its URL, the paths of the POSTs it handled)."""
    server = make_server(reward, port=0, **limits)
    posts: list[str] = []
    handle = server.RequestHandlerClass.do_POST

    def counted(handler):
        posts.append(handler.path)
        handle(handler)

    server.RequestHandlerClass.do_POST = counted
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", posts
    finally:
        server.shutdown()
        server.server_close()


def _post(url: str, body: dict) -> tuple[int, str]:
    request = urllib.request.Request(f"{url}/score", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _image_b64(size: int = 8, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_anything_but_a_base64_png_is_the_clients_fault_400_naming_the_image():
    with serving() as (url, _):
        assert _post(url, {"images": [_image_b64()], "prompts": ["x"]})[0] == 200
        for bad in (_image_b64(fmt="JPEG"), base64.b64encode(b"not an image").decode(), "%%% not base64"):
            status, detail = _post(url, {"images": [_image_b64(), bad], "prompts": ["x", "y"]})
            assert status == 400 and "images[1]" in detail and "base64 PNG" in detail, detail
        assert _post(url, ["a", "list"])[0] == 400


def test_requests_and_images_over_the_limits_get_413_and_the_client_does_not_retry():
    with serving(max_request_bytes=4_000, max_image_pixels=16 * 16) as (url, posts):
        status, detail = _post(url, {"images": [_image_b64(32)], "prompts": ["x"]})
        assert status == 413 and "images[0]: a 32x32 image" in detail
        assert _post(url, {"images": [_image_b64(16)], "prompts": ["x"]})[0] == 200
        status, detail = _post(url, {"images": [_image_b64(16)] * 50, "prompts": ["x"] * 50})
        assert status == 413 and "exceeds the server's limit of 4000 bytes" in detail
        posts.clear()
        remote = build_reward("remote", url=url, retries=3, backoff=0.01)
        with pytest.raises(ValueError, match=r"rejected the request \(413\)"):
            remote(torch.rand(50, 3, 16, 16), ["x"] * 50)
        assert posts == ["/score"]  # one attempt: a 4xx is not retried


def _png_header(width: int, height: int) -> str:
    """A base64 PNG whose header announces ``width`` x ``height`` pixels (its data is empty)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return base64.b64encode(png).decode("ascii")


def test_a_decompression_bomb_is_413_like_any_image_over_the_limit():
    bomb = _png_header(20_000, 20_000)  # 400 MP: more than twice PIL's MAX_IMAGE_PIXELS
    with pytest.raises(PayloadTooLarge, match="decompression bomb"):
        decode_image(bomb)
    with serving(max_image_pixels=10**9) as (url, _):  # under the server's own limit, refused by PIL
        status, detail = _post(url, {"images": [bomb], "prompts": ["x"]})
        assert status == 413 and "images[0]" in detail, detail


def test_a_huge_refused_body_is_not_read_through():
    with serving(max_request_bytes=4_000) as (url, _):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=20) as conn:
            conn.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\n")
            with pytest.raises((BrokenPipeError, ConnectionResetError)):  # the server stopped reading and closed
                for _ in range(1024):  # 256 MiB, far more than the socket buffers hold
                    conn.sendall(b"\0" * 2**18)


def _raw_request(url: str, head: str) -> str:
    """Send ``head`` (a request without a body) on a socket; the status line of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as conn:  # a hung handler fails, not waits forever
        conn.sendall(head.encode())
        return conn.makefile("rb").readline().decode().strip()


def test_a_negative_or_missing_content_length_is_answered_not_waited_on():
    with serving() as (url, _):
        negative = "POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"
        assert _raw_request(url, negative).startswith("HTTP/1.0 400")
        assert _raw_request(url, "POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n").startswith(
            "HTTP/1.0 400")
        assert _raw_request(url, "POST /score HTTP/1.1\r\nHost: x\r\n\r\n").startswith("HTTP/1.0 411")


def test_a_non_loopback_host_without_allow_remote_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as exit:
        server_main(["brightness", "--host", "0.0.0.0"])
    assert exit.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "refusing to bind '0.0.0.0'" in error and "--allow-remote" in error
    with pytest.raises(SystemExit):
        server_main(["no_such_reward"])
    assert "unknown reward 'no_such_reward'" in capsys.readouterr().err
