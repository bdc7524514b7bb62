"""Sample sheets for media other than still images: videos as an animated GIF grid (and an H.264 MP4 of the same
grid when PyAV is installed: the ``video`` extra) with a PNG strip of frames, audio as WAV files with a spectrogram sheet and an HTML index with players. Every file is written atomically
(a folder appears complete or not at all)."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from genrl.grid import make_grid, save_image_atomically
from genrl.utils.files import atomic_write_path, replace_dir_atomically
from genrl.utils.plotting import pyplot
from rewards.media import Media
from rewards.optional import MissingExtraError, require


def _check(media: Media, kind: str, captions: Sequence[str]) -> None:
    if media.kind != kind:
        raise ValueError(f"expected {kind} media, got {media.kind}")
    if len(media) != len(captions):
        raise ValueError(f"got {len(media)} clips but {len(captions)} captions")
    if len(media) == 0:
        raise ValueError(f"cannot make a sheet of zero {kind} samples")


def video_frames(media: Media) -> np.ndarray:
    """``(N, F, H, W, 3)`` uint8 frames of video media."""
    return media.stored().tensor.permute(0, 1, 3, 4, 2).numpy()


def save_mp4(frames: Sequence[np.ndarray], fps: float, path: str | os.PathLike, crf: int = 18) -> Path:
    """Write ``(H, W, 3)`` uint8 frames as an H.264 MP4 (yuv420p, so odd sizes are padded by one white pixel) at
    ``fps``, atomically. Needs PyAV (``pip install -e ".[video]"``)."""
    from fractions import Fraction

    av = require("av")
    path = Path(path)
    h, w = frames[0].shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    with atomic_write_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            image = np.pad(np.asarray(frame, dtype=np.uint8), pad, constant_values=255)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder
    return path


def mp4_available() -> bool:
    """Whether PyAV with an H.264 encoder is installed (the ``video`` extra)."""
    try:
        av = require("av")
    except MissingExtraError:
        return False
    return "libx264" in av.codecs_available


def save_video_grid(media: Media, captions: Sequence[str], path: str | os.PathLike, *, columns: int = 4,
                    cell: int = 128, strip_frames: int = 6) -> tuple[Path, ...]:
    """Write ``path`` (an animated GIF: the grid of every video, frame by frame, at the media's fps), next to it
    ``<stem>_frames.png`` (each video as a row of ``strip_frames`` evenly spaced frames, captioned) and, when
    PyAV is installed, ``<stem>.mp4`` (the GIF's grid as H.264 at the media's fps, which players scrub and GIF
    palettes do not dither). Returns the paths written: GIF, strip, then the MP4 if any."""
    _check(media, "video", captions)
    frames = video_frames(media)
    n, f = frames.shape[:2]
    grids = [make_grid(frames[:, t], captions, columns=columns, cell=cell) for t in range(f)]
    path = Path(path)
    with atomic_write_path(path) as tmp:
        grids[0].save(tmp, format="GIF", save_all=True, append_images=grids[1:], loop=0,
                      duration=max(1, round(1000 / media.fps)))
    picks = np.unique(np.linspace(0, f - 1, min(strip_frames, f)).round().astype(int))
    strip_images = frames[:, picks].reshape(n * len(picks), *frames.shape[2:])
    strip_captions = [f"{captions[i]}\nframe {t + 1}/{f}" if k == 0 else f"frame {t + 1}/{f}"
                      for i in range(n) for k, t in enumerate(picks)]
    # one caption line more than the GIF's: the first frame's "frame 1/F" must not push its prompt out
    strip = save_image_atomically(make_grid(strip_images, strip_captions, columns=len(picks), cell=cell,
                                            caption_lines=4),
                                  path.with_name(f"{path.stem}_frames.png"))
    if not mp4_available():
        return path, strip
    return path, strip, save_mp4([np.asarray(g.convert("RGB")) for g in grids], media.fps, path.with_suffix(".mp4"))


def save_audio_sheet(media: Media, captions: Sequence[str], directory: str | os.PathLike, *,
                     columns: int = 4) -> Path:
    """Write ``directory`` with ``clip_000.wav`` ... (16-bit PCM at the media's sample rate), ``spectrograms.png``
    (one log-magnitude spectrogram per clip, captioned) and ``index.html`` (a player, the caption and the
    spectrogram sheet). Replaces the folder as a whole. Returns it."""
    _check(media, "audio", captions)
    pcm = media.stored().tensor.numpy()  # (N, channels, samples) int16
    rate = int(media.sample_rate)

    def write(tmp: Path) -> None:
        names = []
        for i, clip in enumerate(pcm):
            names.append(f"clip_{i:03d}.wav")
            wavfile.write(tmp / names[-1], rate, np.ascontiguousarray(clip.T))
        figure = _spectrogram_sheet(pcm, rate, captions, columns)
        figure.savefig(tmp / "spectrograms.png", dpi=100)
        pyplot().close(figure)
        rows = "\n".join(f'<tr><td>{i}</td><td><audio controls preload="none" src="{name}"></audio></td>'
                         f"<td>{html.escape(caption).replace(chr(10), '<br>')}</td></tr>"
                         for i, (name, caption) in enumerate(zip(names, captions, strict=True)))
        (tmp / "index.html").write_text(
            "<!doctype html><meta charset='utf-8'><title>audio samples</title>\n"
            f"<p>{len(names)} clips, {rate} Hz, {pcm.shape[1]} channel(s), {pcm.shape[2] / rate:.2f} s each</p>\n"
            f"<table>\n<tr><th>#</th><th>clip</th><th>prompt and scores</th></tr>\n{rows}\n</table>\n"
            "<p><img src='spectrograms.png' alt='spectrograms'></p>\n", encoding="utf-8")

    return replace_dir_atomically(directory, write)


def _spectrogram_sheet(pcm: np.ndarray, rate: int, captions: Sequence[str], columns: int):
    """A figure with one spectrogram (channels averaged) per clip; short clips get a short FFT window."""
    n = len(pcm)
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    fig, axes = pyplot().subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for i, (clip, caption) in enumerate(zip(pcm, captions, strict=True)):
        ax = axes.flat[i]
        mono = clip.astype(np.float32).mean(axis=0) / 32767.0
        nfft = int(min(512, max(8, 2 ** np.floor(np.log2(max(8, len(mono) // 4))))))
        ax.specgram(mono, NFFT=nfft, Fs=rate, noverlap=nfft // 2, cmap="magma")
        ax.set_title(caption.split("\n")[0][:40], fontsize=8)
        ax.set_xlabel("s", fontsize=7)
        ax.set_ylabel("Hz", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    return fig


def save_media_sheet(media: Media, captions: Sequence[str], path: str | os.PathLike, *, columns: int = 4) -> list[Path]:
    """The sheet of any kind: a PNG grid for images (``path``), a GIF grid and a frame strip for video (``path``
    with a ``.gif`` suffix), a folder of WAVs with spectrograms and an HTML index for audio (``path`` without its
    suffix). Returns the files or folder written."""
    path = Path(path)
    if media.kind == "image":
        images = media.stored().tensor.permute(0, 2, 3, 1).numpy()
        return [save_image_atomically(make_grid(images, captions, columns=columns), path.with_suffix(".png"))]
    if media.kind == "video":
        return list(save_video_grid(media, captions, path.with_suffix(".gif"), columns=columns))
    return [save_audio_sheet(media, captions, path.with_suffix(""), columns=columns)]

