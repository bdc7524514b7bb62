"""A reward computed by a reward server (``python -m rewards.server``) over HTTP, with JSON on the wire."""

from __future__ import annotations

import base64
import binascii
import io
import json
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import torch
from PIL import Image

from .base import Reward, RewardOutput
from .registry import register_reward


def encode_image(image: torch.Tensor) -> str:
    """A ``(3, H, W)`` [0, 1] image as base64 PNG (lossless at 8 bits)."""
    array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class PayloadTooLarge(ValueError):
    """A request, or an image in it, is larger than the reward server accepts (HTTP 413)."""


def decode_image(data: str, max_pixels: int | None = None) -> np.ndarray:
    """Base64 PNG -> ``(H, W, 3)`` uint8.

    Anything else (bad base64, another format, a truncated file) is a ``ValueError``; an image of
    more than ``max_pixels`` pixels, or one PIL refuses as a decompression bomb (over twice
    ``Image.MAX_IMAGE_PIXELS``), is a :class:`PayloadTooLarge`, found from the PNG header before
    its pixels are decompressed (a small PNG can hold an enormous image).
    """
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
            if image.format != "PNG":
                raise ValueError(f"expected a base64 PNG, got a {image.format} image")
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise PayloadTooLarge(f"a {width}x{height} image has more than the server's limit of "
                                      f"{max_pixels} pixels")
            return np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError as err:  # raised by Image.open, before the check above
        raise PayloadTooLarge(str(err)) from None
    except (OSError, binascii.Error) as err:  # not an image, or a broken one
        raise ValueError(f"expected a base64 PNG: {err}") from None


def encode_waveform(waveform: torch.Tensor) -> str:
    """A 1-D waveform as base64 of its little-endian float32 samples (lossless for float32 audio)."""
    return base64.b64encode(waveform.detach().float().cpu().numpy().astype("<f4").tobytes()).decode("ascii")


def decode_waveform(data: str) -> np.ndarray:
    """Base64 little-endian float32 -> 1-D ``float32`` array."""
    return np.frombuffer(base64.b64decode(data), dtype="<f4").astype(np.float32)


def encode_video(video: torch.Tensor) -> str:
    """A ``(F, 3, H, W)`` [0, 1] clip as ``"F;"`` and the base64 PNG of its frames stacked top to bottom."""
    frames, _, height, width = video.shape
    return f"{frames};" + encode_image(video.permute(1, 0, 2, 3).reshape(3, frames * height, width))


def decode_video(data: str, max_pixels: int | None = None) -> np.ndarray:
    """``"F;<base64 PNG>"`` -> ``(F, 3, H, W)`` uint8; ``max_pixels`` bounds the whole clip (all its frames)."""
    count, sep, png = data.partition(";") if isinstance(data, str) else ("", "", "")
    if not sep or not count.isdigit() or int(count) < 1:
        raise ValueError("expected a clip as 'F;<base64 PNG of the F frames stacked vertically>'")
    strip = decode_image(png, max_pixels)
    frames = int(count)
    if strip.shape[0] % frames:
        raise ValueError(f"a strip {strip.shape[0]} pixels high does not split into {frames} frames")
    return strip.reshape(frames, strip.shape[0] // frames, strip.shape[1], 3).transpose(0, 3, 1, 2)


#: Modality -> (request key, encoder of one item, decoder of one item): what the client and server agree on.
WIRE_FORMATS = {"image": ("images", encode_image, decode_image),
                "video": ("videos", encode_video, decode_video),
                "audio": ("audio", encode_waveform, decode_waveform)}


def _jsonable(value: Any, where: str) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"{where} is not JSON-serialisable ({type(value).__name__}); the reward server only "
                    "accepts JSON metadata")


@register_reward("remote")
class RemoteReward(Reward):
    """A reward computed by ``python -m rewards.server`` at ``url``.

    ``modality`` must match the served reward's: ``"image"`` (sent as PNG), ``"video"`` (each clip one PNG of
    its frames stacked, with the frame count) or ``"audio"``
    (``(N, T)`` waveforms sent as float32). ``sample_rate`` (audio) is the rate the client's audio is at:
    sent with each request, the server refuses it when its reward expects another; it is also checked
    against :class:`~rewards.media.Media` passed in.
    Requests carry at most ``batch_size`` items, time out after ``timeout`` seconds, and are
    retried ``retries`` times (with ``backoff`` seconds, doubling) on connection errors, timeouts and
    HTTP 5xx; then a ``RuntimeError`` names the URL and the last error. HTTP 4xx is not retried.
    """

    def __init__(self, url: str, timeout: float = 120.0, retries: int = 3, backoff: float = 0.5,
                 batch_size: int = 64, modality: str = "image", sample_rate: int | None = None) -> None:
        if modality not in WIRE_FORMATS:
            raise ValueError(f"remote: modality must be one of {sorted(WIRE_FORMATS)}, got {modality!r}")
        if sample_rate is not None and modality != "audio":
            raise ValueError("remote: sample_rate is an option of modality 'audio'")
        self.modality, self.sample_rate = modality, sample_rate
        self.url = url.rstrip("/")
        self.timeout, self.retries, self.backoff, self.batch_size = timeout, retries, backoff, batch_size

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode()
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(f"{self.url}/score", data=data,
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as err:
                detail = err.read().decode(errors="replace")
                if err.code < 500:
                    raise ValueError(f"reward server {self.url} rejected the request ({err.code}): {detail}") from None
                last = RuntimeError(f"HTTP {err.code}: {detail}")
            except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
                last = err
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise RuntimeError(f"reward server {self.url} failed after {self.retries + 1} attempts: {last}")

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        scores: list[float] = []
        info: dict[str, list] = {}
        for start in range(0, len(prompts), self.batch_size):
            stop = start + self.batch_size
            meta = [{k: v if _plain(v) else _jsonable(v, f"metadata[{start + i}][{k!r}]") for k, v in m.items()}
                    for i, m in enumerate(metadata[start:stop])]
            key, encode, _ = WIRE_FORMATS[self.modality]
            body = {key: [encode(item) for item in images[start:stop]], "prompts": prompts[start:stop],
                    "metadata": meta}
            if self.sample_rate is not None:
                body["sample_rate"] = int(self.sample_rate)
            reply = self._post(body)
            scores.extend(reply["scores"])
            for key, value in reply.get("info", {}).items():
                if isinstance(value, list):
                    info.setdefault(key, []).extend(value)
        return RewardOutput(torch.tensor(scores, dtype=torch.float32), info)


def _plain(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False
