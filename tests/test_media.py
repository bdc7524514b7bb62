"""Media batches and their sample sheets: the stored 8/16-bit copies, GIF grids of videos, WAV folders of audio."""

import html

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import wavfile

from genrl.media_sheets import save_audio_sheet, save_media_sheet, save_video_grid
from rewards.media import Media


def _video(n=2, frames=5, size=8):
    # video i fades from red to blue over its frames, with brightness 1 / (i + 1)
    t = torch.linspace(0, 1, frames)
    v = torch.zeros(n, frames, 3, size, size)
    for i in range(n):
        v[i, :, 0] = (1 - t).view(-1, 1, 1) / (i + 1)
        v[i, :, 2] = t.view(-1, 1, 1) / (i + 1)
    return Media(v, "video", fps=8)


def _audio(n=3, rate=800, seconds=0.5):
    t = torch.arange(int(rate * seconds)) / rate
    clips = torch.stack([torch.stack([0.9 * torch.sin(2 * torch.pi * 50 * (k + 1) * t)] * 2) for k in range(n)])
    return Media(clips, "audio", sample_rate=rate)


def test_media_checks_its_layout_and_rate():
    with pytest.raises(ValueError, match="unknown media kind 'sound'"):
        Media(torch.zeros(1, 2, 3), "sound")
    with pytest.raises(ValueError, match=r"video media must be \(N, F, 3, H, W\), got shape \(1, 3, 4, 4\)"):
        Media(torch.zeros(1, 3, 4, 4), "video", fps=8)
    with pytest.raises(ValueError, match="needs a positive fps"):
        Media(torch.zeros(1, 2, 3, 4, 4), "video")
    with pytest.raises(ValueError, match="needs a positive sample_rate"):
        Media(torch.zeros(1, 2, 10), "audio")


def test_the_stored_copy_rounds_to_8_and_16_bits_and_comes_back():
    images = Media(torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1, "image")
    stored = images.stored()
    assert stored.tensor.dtype == torch.uint8 and stored.tensor.device.type == "cpu"
    expected = np.clip(np.rint(images.tensor.numpy() * 255), 0, 255)  # out-of-range values clamp
    assert np.array_equal(stored.tensor.numpy(), expected)
    assert float((stored.as_float().tensor - images.tensor.clamp(0, 1)).abs().max()) <= 0.5 / 255 + 1e-7
    audio = _audio()
    pcm = audio.stored()
    assert pcm.tensor.dtype == torch.int16 and pcm.sample_rate == audio.sample_rate
    assert float((pcm.as_float().tensor - audio.tensor).abs().max()) <= 0.5 / 32767 + 1e-7
    joined = Media.cat([audio.select(slice(0, 1)), pcm.select(slice(1, 3))])
    assert joined.quantized and torch.equal(joined.tensor, pcm.tensor)
    with pytest.raises(ValueError, match="cannot join audio media at 400 with audio media at 800"):
        Media.cat([audio, Media(audio.tensor, "audio", sample_rate=400)])


def test_a_video_grid_is_an_animated_gif_at_the_media_fps_with_a_frame_strip(tmp_path):
    video = _video()
    gif, strip, mp4 = save_video_grid(video, ["fade one", "fade two"], tmp_path / "grid.gif", cell=16,
                                      strip_frames=3)
    with Image.open(gif) as im:
        assert im.n_frames == 5 and abs(im.info["duration"] - 125) <= 10  # 8 fps (GIF stores centiseconds)
        first = np.asarray(im.convert("RGB"))
        im.seek(4)
        last = np.asarray(im.convert("RGB"))
    # the first cell's centre (cells start at x = y = 8): red at the first frame, blue at the last
    r, _, b = first[16, 16].astype(int)
    assert r > 200 and b < 60
    r, _, b = last[16, 16].astype(int)
    assert b > 200 and r < 60
    with Image.open(strip) as im:  # 2 videos x 3 frames, in a 3-column grid
        assert im.size[0] == 3 * (16 + 8) + 8
    # the MP4 holds the GIF's grid: as many frames at the media's fps, the same colours up to H.264's loss
    import av

    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert float(stream.average_rate) == pytest.approx(8.0)
    assert len(decoded) == 5 and decoded[0].shape[1] >= first.shape[1]
    for frame, gif_frame in ((decoded[0], first), (decoded[-1], last)):
        h, w = gif_frame.shape[:2]
        assert np.abs(frame[:h, :w].astype(int) - gif_frame.astype(int)).mean() < 6


def test_an_audio_sheet_is_wav_files_a_spectrogram_sheet_and_an_html_index(tmp_path):
    audio = _audio()
    captions = ["a low <hum>", "a middle hum\nclap 0.50", "a high hum"]
    folder = save_audio_sheet(audio, captions, tmp_path / "audio")
    for i in range(3):
        rate, data = wavfile.read(folder / f"clip_{i:03d}.wav")
        assert rate == 800 and data.dtype == np.int16 and data.shape == (400, 2)
        assert np.array_equal(data.T, np.rint(audio.tensor[i].numpy() * 32767).astype(np.int16))
    page = (folder / "index.html").read_text()
    assert page.count("<audio controls") == 3 and html.escape("a low <hum>") in page and "clap 0.50" in page
    with Image.open(folder / "spectrograms.png") as im:
        assert im.size[0] > 300
    # a bad call leaves the folder as it was
    with pytest.raises(ValueError, match="got 3 clips but 2 captions"):
        save_audio_sheet(audio, captions[:2], folder)
    assert (folder / "clip_002.wav").is_file()


def test_the_sheet_of_any_kind(tmp_path):
    images = Media(torch.rand(2, 3, 8, 8), "image")
    assert [p.name for p in save_media_sheet(images, ["a", "b"], tmp_path / "s.png")] == ["s.png"]
    assert [p.name for p in save_media_sheet(_video(), ["a", "b"], tmp_path / "v")] == ["v.gif", "v_frames.png", "v.mp4"]
    assert [p.name for p in save_media_sheet(_audio(2), ["a", "b"], tmp_path / "a.html")] == ["a"]


def test_without_pyav_a_video_sheet_is_the_gif_and_the_strip(tmp_path, monkeypatch):
    import genrl.media_sheets as sheets

    monkeypatch.setattr(sheets, "mp4_available", lambda: False)
    assert [p.name for p in save_media_sheet(_video(), ["a", "b"], tmp_path / "v")] == ["v.gif", "v_frames.png"]
    assert not (tmp_path / "v.mp4").exists()
