"""Clips and captions from disk (rewards.video_files) and the OT map script embedding a caption folder itself."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from rewards.pisces_rewards import PiscesQualityReward, load_ot_map
from rewards.video_files import embed_caption_folder, read_caption_folder, read_video
from rewards.video_text import load_video_text_model

PALETTE = np.array([[255, 255, 255], [220, 30, 30], [30, 180, 60], [40, 60, 220], [240, 200, 20], [0, 0, 0]],
                   dtype=np.uint8)


def _frames(seed: int, count: int = 9, size: int = 32) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 frames in six flat colours (a GIF stores them exactly), 4 px blocks."""
    rng = np.random.default_rng(seed)
    blocks = PALETTE[rng.integers(0, len(PALETTE), (count, size // 4, size // 4))]
    return blocks.repeat(4, axis=1).repeat(4, axis=2)


def _write_gif(frames: np.ndarray, path) -> None:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], loop=0, duration=125)


def _as_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


@pytest.fixture(scope="module")
def model_dir(video_text_model_dir):
    return video_text_model_dir


@pytest.fixture()
def caption_folder(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    prompts = ["a video of a red circle moving left", "a video of two blue squares moving up"]
    rows = []
    for i in range(16):
        _write_gif(_frames(i), folder / f"clip_{i:02d}.gif")
        rows.append({"file_name": f"clip_{i:02d}.gif", "text": prompts[i % 2]})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder, rows


def test_a_gif_decodes_to_its_frames_and_an_mp4_to_nearly_them(tmp_path):
    frames = _frames(0)
    _write_gif(frames, tmp_path / "a.gif")
    assert torch.equal(read_video(tmp_path / "a.gif"), _as_tensor(frames))
    from genrl.media_sheets import mp4_available, save_mp4

    if not mp4_available():
        pytest.skip("PyAV with libx264 is not installed")
    smooth = np.repeat(np.linspace(0, 255, 32, dtype=np.uint8)[None, None, :, None], 9, 0).repeat(32, 1).repeat(3, 3)
    save_mp4(list(smooth), 8, tmp_path / "b.mp4")
    decoded = read_video(tmp_path / "b.mp4")
    assert decoded.shape == (9, 3, 32, 32)
    assert (decoded - _as_tensor(smooth)).abs().mean() < 0.03  # H.264 at crf 18: close, not exact


def test_the_caption_folder_embeds_in_its_order_as_the_model_embeds_the_frames(model_dir, caption_folder):
    folder, rows = caption_folder
    from rewards.video_embedders import build_video_text_embedder

    text, video = embed_caption_folder(build_video_text_embedder(str(model_dir)), folder, batch_size=4)
    model, tokenizer = load_video_text_model(model_dir)
    with torch.no_grad():
        clips = torch.stack([_as_tensor(_frames(i)) for i in range(16)])
        expected_video = model.encode_video(clips)[1]
        expected_text = model.encode_text(*model.tokenize(tokenizer, [r["text"] for r in rows]))[1]
    assert video.shape == (16, model.config.embed_dim)
    torch.testing.assert_close(video, expected_video, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(text, expected_text, atol=1e-5, rtol=1e-4)


class ChannelMeans:
    """An embedder whose video embedding is each clip's channel means (any length and size) and which records
    the shapes of the batches it is given."""

    def __init__(self):
        self.batches = []

    def embed_video(self, videos):
        self.batches.append(tuple(videos.shape))
        return videos.mean(dim=(1, 3, 4))

    def embed_text(self, prompts):
        return torch.tensor([[float(len(p)), 0.0, 0.0] for p in prompts])


def test_clips_of_other_lengths_and_sizes_embed_in_their_own_batches_and_keep_their_order(caption_folder):
    folder, rows = caption_folder
    odd = {3: _frames(50, count=5), 7: _frames(51, size=16), 11: _frames(52, count=5)}
    for i, frames in odd.items():
        _write_gif(frames, folder / f"clip_{i:02d}.gif")
    embedder = ChannelMeans()
    text, video = embed_caption_folder(embedder, folder, batch_size=4)
    expected = torch.stack([_as_tensor(odd.get(i, _frames(i))).mean(dim=(0, 2, 3)) for i in range(16)])
    torch.testing.assert_close(video, expected)
    assert sorted(embedder.batches) == sorted([(4, 9, 3, 32, 32)] * 3 + [(1, 9, 3, 32, 32), (2, 5, 3, 32, 32),
                                                                          (1, 9, 3, 16, 16)])
    assert text[:, 0].tolist() == [float(len(r["text"])) for r in rows]


def test_a_bad_caption_folder_is_named(tmp_path, caption_folder):
    folder, _ = caption_folder
    with pytest.raises(FileNotFoundError, match="no metadata.jsonl"):
        read_caption_folder(tmp_path)
    with open(folder / "metadata.jsonl", "a") as fh:
        fh.write('{"file_name": "gone.gif", "text": "a video of a red circle"}\n')
    with pytest.raises(FileNotFoundError, match=r"metadata.jsonl:17: clip 'gone.gif' not found"):
        read_caption_folder(folder)
    (folder / "metadata.jsonl").write_text('{"file": "clip_00.gif"}\n')
    with pytest.raises(ValueError, match=r"metadata.jsonl:1: expected"):
        read_caption_folder(folder)
    (folder / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a video file"):
        read_video(folder / "notes.txt")


def test_the_map_script_embeds_a_caption_folder_and_keeps_its_features(model_dir, caption_folder, tmp_path):
    folder, _ = caption_folder
    out, feats = tmp_path / "map", tmp_path / "feats.safetensors"
    done = subprocess.run([sys.executable, "scripts/train_ot_map.py", "--videos", str(folder), "--embedder",
                           str(model_dir), "--out", str(out), "--save-features", str(feats), "--rounds", "5",
                           "--eval-every", "5", "--threads", "1"], check=False, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    from rewards.video_embedders import build_video_text_embedder

    text, video = embed_caption_folder(build_video_text_embedder(str(model_dir)), folder)
    saved = load_file(feats)
    torch.testing.assert_close(saved["video"], video)
    torch.testing.assert_close(saved["text"], text)
    _, config = load_ot_map(out)
    assert config["embedder"] == str(model_dir)
    clips = torch.stack([_as_tensor(_frames(0)), _as_tensor(_frames(1))])
    scores = PiscesQualityReward(embedder=str(model_dir), ot_map=str(out))(clips, ["a video of a red circle moving left"] * 2).scores
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    missing = subprocess.run([sys.executable, "scripts/train_ot_map.py", "--videos", str(folder), "--out", str(out)],
                             check=False, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "--videos needs --embedder" in missing.stderr
