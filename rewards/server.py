"""Serve any registered reward over HTTP, and a client reward that calls such a server.

    python -m rewards.server toy_verifier --port 8765 --option mode=partial
    python -m rewards.server pickscore --option device=cuda --host 0.0.0.0 --allow-remote

A reward with conflicting dependencies runs in its own environment behind this server; the
trainer uses ``remote`` (:class:`RemoteReward`) with ``url=http://127.0.0.1:8765``. The wire
format is JSON (:data:`rewards.remote.WIRE_FORMATS`): images as base64 PNG (key ``images``), video clips
as one PNG of their frames stacked with the frame count (key ``videos``, for video rewards such as
``frame_mean``) or waveforms as base64 float32 (key ``audio``, for audio rewards such as ``clap``),
prompts, JSON metadata; never pickle. The server binds the loopback interface unless ``--allow-remote`` is given.

Answers: 200 with the scores; 400 for a request the client got wrong (bad JSON, a missing key, an
image that is not a base64 PNG, an invalid ``Content-Length``), 411 without a ``Content-Length``,
413 for a body over ``--max-request-mb`` or an image over ``--max-image-pixels`` (or one PIL refuses
as a decompression bomb); 500 when the reward itself fails. The client
(:class:`rewards.remote.RemoteReward`) retries only 5xx. A refused body is read for at most
:data:`MAX_DISCARD_BYTES` before the connection closes, so a client sending more sees a reset
connection rather than the 413.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import json
import logging
import socket
import sys
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import torch

from .base import Reward
from .cli_options import parse_options
from .registry import available_rewards, build_reward
from .remote import WIRE_FORMATS, PayloadTooLarge

logger = logging.getLogger(__name__)

#: Default request limit: a client batch of 64 SD3.5 images at 1024 px as base64 PNG is about 200 MB.
DEFAULT_MAX_REQUEST_BYTES = 256 * 2**20
#: Default image limit: 4096 x 4096 pixels, 16 times a 1024 px image (FLUX's 2 MP fit comfortably).
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
#: Seconds a connection may stall while its request is read, so a client that announces more than it
#: sends cannot hold a handler thread forever.
READ_TIMEOUT_S = 60.0
#: Body bytes a refused (413) request may still send before the connection closes: a client slightly over
#: the limit reads the 413, and a huge announced body (say 100 GB) is not read through.
MAX_DISCARD_BYTES = 2**20


class RequestError(ValueError):
    """A request the server refuses before reading it whole; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _info_to_json(info: dict) -> dict:
    """The JSON-representable part of a reward's info dict (tensors become lists; the rest is dropped)."""
    out = {}
    for key, value in info.items():
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        try:
            json.dumps(value)
        except TypeError:
            continue
        out[key] = value
    return out


def content_length(header: str | None, limit: int) -> int:
    """The body size a ``Content-Length`` header announces, checked against ``limit`` bytes.

    Missing: 411; not a non-negative integer: 400 (``rfile.read(-1)`` would wait for the client to
    close the connection); over ``limit``: 413.
    """
    if header is None:
        raise RequestError(411, "the request needs a Content-Length header")
    text = header.strip()
    if not (text.isascii() and text.isdigit()):
        raise RequestError(400, f"invalid Content-Length {header!r}: expected a non-negative integer")
    length = int(text)
    if length > limit:
        raise RequestError(413, f"request body of {length} bytes exceeds the server's limit of {limit} bytes "
                                "(--max-request-mb; or lower the client's batch_size)")
    return length


def _decode_all(key: str, items: Any, decode: Callable[[str], np.ndarray]) -> np.ndarray:
    """The request's encoded items, decoded and stacked; an error names the item (``images[3]: ...``)."""
    if not isinstance(items, list) or not items:
        raise TypeError(f"{key!r} must be a non-empty list of base64 strings")
    decoded = []
    for i, item in enumerate(items):
        try:
            decoded.append(decode(item))
        except PayloadTooLarge as err:
            raise PayloadTooLarge(f"{key}[{i}]: {err}") from None
        except (TypeError, ValueError) as err:
            raise ValueError(f"{key}[{i}]: {err}") from None
    return np.stack(decoded)


def make_handler(reward: Reward, name: str, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> type[BaseHTTPRequestHandler]:
    """A request handler scoring POST /score bodies with ``reward``; GET /health names it.

    Bodies over ``max_request_bytes`` and images over ``max_image_pixels`` are refused with 413.
    """
    key, _, decode = WIRE_FORMATS[reward.modality]
    if reward.modality in ("image", "video"):  # the pixel limit is checked from each PNG's header, before decoding
        decode = functools.partial(decode, max_pixels=max_image_pixels)

    class Handler(BaseHTTPRequestHandler):
        timeout = READ_TIMEOUT_S

        def _reply(self, status: int, body: dict) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(200, {"reward": name, "modality": reward.modality})
            else:
                self._reply(404, {"error": f"unknown path {self.path}"})

        def _refuse(self, err: RequestError) -> None:
            """Answer ``err`` before the body is read; the connection closes after the reply."""
            self.close_connection = True
            if err.status == 413:  # read a body that is not too large away, so its client gets the 413,
                # not a reset connection; of a larger one only MAX_DISCARD_BYTES (its client sees a reset)
                self._discard(min(int(self.headers["Content-Length"]), MAX_DISCARD_BYTES))
            self._reply(err.status, {"error": str(err)})

        def _discard(self, length: int) -> None:
            """Read and drop ``length`` body bytes (a chunk at a time); stop if the client stalls or leaves."""
            try:
                while length > 0:
                    chunk = self.rfile.read(min(length, 2**16))
                    if not chunk:
                        break
                    length -= len(chunk)
            except OSError:  # READ_TIMEOUT_S passed, or the connection dropped: nothing left to answer
                pass

        def do_POST(self) -> None:
            if self.path != "/score":
                self._reply(404, {"error": f"unknown path {self.path}"})
                return
            try:
                length = content_length(self.headers.get("Content-Length"), max_request_bytes)
            except RequestError as err:
                self._refuse(err)
                return
            try:
                body = json.loads(self.rfile.read(length))
                if not isinstance(body, dict):
                    raise TypeError(f"the request must be a JSON object, got {type(body).__name__}")
                if key not in body:
                    raise ValueError(f"{name} scores {reward.modality}: the request needs {key!r} "
                                     f"(the client's modality option), got keys {sorted(body)}")
                rate, expected = body.get("sample_rate"), getattr(reward, "sample_rate", None)
                if rate is not None and expected is not None and int(rate) != int(expected):
                    raise ValueError(f"{name} expects audio at {expected} Hz; the request's is at {rate} Hz")
                media = _decode_all(key, body[key], decode)
                out = reward(media, body["prompts"], body.get("metadata"))
                self._reply(200, {"scores": out.scores.float().tolist(), "info": _info_to_json(out.info)})
            except PayloadTooLarge as err:
                self._reply(413, {"error": str(err)})
            except (KeyError, ValueError, TypeError) as err:
                self._reply(400, {"error": f"{type(err).__name__}: {err}"})
            except Exception as err:  # a failing reward must answer, not hang the client
                logger.exception("reward %s failed", name)
                self._reply(500, {"error": f"{type(err).__name__}: {err}"})

        def log_message(self, fmt: str, *args) -> None:
            logger.debug(fmt, *args)

    return Handler


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def check_bind(host: str, allow_remote: bool) -> None:
    """Refuse (``PermissionError``) a host that is not a loopback address unless ``allow_remote``."""
    if not allow_remote and not _is_loopback(host):
        raise PermissionError(f"refusing to bind {host!r}: the reward server binds loopback only unless "
                              "allow_remote (--allow-remote) is set")


def make_server(reward_name: str, options: dict | None = None, host: str = "127.0.0.1", port: int = 0,
                allow_remote: bool = False, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> ThreadingHTTPServer:
    """Build (not start) a server for a registered reward; refuses a non-loopback host without ``allow_remote``."""
    check_bind(host, allow_remote)
    reward = build_reward(reward_name, **(options or {}))
    handler = make_handler(reward, reward_name, max_request_bytes, max_image_pixels)
    return ThreadingHTTPServer((host, port), handler)


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, dict]:
    """The command line and the reward's options; bad input is argparse's usage error (exit status 2)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reward", help="registered reward name")
    parser.add_argument("--option", action="append", default=[], help="constructor option key=value (repeatable)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    parser.add_argument("--max-request-mb", type=float, default=DEFAULT_MAX_REQUEST_BYTES / 2**20,
                        help="largest request body accepted; larger ones get 413 (default: %(default).0f)")
    parser.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                        help="largest image (width x height) accepted; larger ones get 413 (default: %(default)d)")
    args = parser.parse_args(argv)
    try:
        check_bind(args.host, args.allow_remote)
        if args.reward not in available_rewards():
            raise ValueError(f"unknown reward {args.reward!r}; available: {available_rewards()}")
        if not 0 <= args.port <= 65535:
            raise ValueError(f"--port must be in [0, 65535], got {args.port}")
        if args.max_request_mb <= 0 or args.max_image_pixels <= 0:
            raise ValueError("--max-request-mb and --max-image-pixels must be > 0")
        options = parse_options(args.option)
    except (PermissionError, ValueError) as err:
        parser.error(str(err))
    return args, options


def main(argv: Sequence[str] | None = None) -> int:
    args, options = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    server = make_server(args.reward, options, args.host, args.port, args.allow_remote,
                         max_request_bytes=int(args.max_request_mb * 2**20), max_image_pixels=args.max_image_pixels)
    host, port = server.server_address[:2]
    print(f"serving {args.reward} on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
