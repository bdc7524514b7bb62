"""Serve any registered reward over HTTP, and a client reward that calls such a server.

    python -m rewards.server toy_verifier --port 8765 --option mode=partial
    python -m rewards.server pickscore --option device=cuda --host 0.0.0.0 --allow-remote

A reward with conflicting dependencies runs in its own environment behind this server; the
trainer uses ``remote`` (:class:`RemoteReward`) with ``url=http://127.0.0.1:8765``. The wire
format is JSON (:data:`rewards.remote.WIRE_FORMATS`): images as base64 PNG (key ``images``) or
waveforms as base64 float32 (key ``audio``, for audio rewards such as ``clap``), prompts, JSON
metadata; never pickle. The server binds the loopback interface unless ``--allow-remote`` is given.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import socket
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import torch

from .base import Reward
from .registry import build_reward
from .remote import WIRE_FORMATS

logger = logging.getLogger(__name__)


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


def make_handler(reward: Reward, name: str) -> type[BaseHTTPRequestHandler]:
    """A request handler scoring POST /score bodies with ``reward``; GET /health names it."""

    class Handler(BaseHTTPRequestHandler):
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

        def do_POST(self) -> None:
            if self.path != "/score":
                self._reply(404, {"error": f"unknown path {self.path}"})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                key, _, decode = WIRE_FORMATS[reward.modality]
                if key not in body:
                    raise ValueError(f"{name} scores {reward.modality}: the request needs {key!r} "
                                     f"(the client's modality option), got keys {sorted(body)}")
                media = np.stack([decode(d) for d in body[key]])
                out = reward(media, body["prompts"], body.get("metadata"))
                self._reply(200, {"scores": out.scores.float().tolist(), "info": _info_to_json(out.info)})
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


def make_server(reward_name: str, options: dict | None = None, host: str = "127.0.0.1", port: int = 0,
                allow_remote: bool = False) -> ThreadingHTTPServer:
    """Build (not start) a server for a registered reward; refuses a non-loopback host without ``allow_remote``."""
    if not allow_remote and not _is_loopback(host):
        raise PermissionError(f"refusing to bind {host!r}: the reward server binds loopback only unless "
                              "allow_remote (--allow-remote) is set")
    reward = build_reward(reward_name, **(options or {}))
    return ThreadingHTTPServer((host, port), make_handler(reward, reward_name))


def _parse_options(pairs: Sequence[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--option expects key=value, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reward", help="registered reward name")
    parser.add_argument("--option", action="append", default=[], help="constructor option key=value (repeatable)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    server = make_server(args.reward, _parse_options(args.option), args.host, args.port, args.allow_remote)
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
