import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genrl.grid import make_grid

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grid_script_writes_a_readable_deterministic_png(tmp_path):
    grid = _script("sample_grid")
    args = ["--prompts", "toy:test", "--max-prompts", "3", "--steps", "3", "--reward", "toy_verifier"]
    assert grid.main(args + ["--out", str(tmp_path / "a.png")]) == 0
    assert grid.main(args + ["--out", str(tmp_path / "b.png")]) == 0
    a, b = Image.open(tmp_path / "a.png"), Image.open(tmp_path / "b.png")
    assert a.size == b.size and a.size[0] > 3 * 128
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_grid_script_rejects_bad_input(tmp_path):
    grid = _script("sample_grid")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="contains no prompts"):
        grid.main(["--prompts", str(empty), "--out", str(tmp_path / "g.png")])
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        grid.main(["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "g.png")])
    assert not (tmp_path / "g.png").exists()


def test_make_grid_layout():
    images = np.zeros((5, 32, 32, 3), dtype=np.uint8)
    img = make_grid(images, [f"caption {i}" for i in range(5)], columns=2, cell=64)
    assert img.size[0] == 2 * (64 + 8) + 8
    with pytest.raises(ValueError, match="5 images but 4 captions"):
        make_grid(images, ["x"] * 4)


def test_grid_script_writes_gif_grids_for_video_and_wav_sheets_for_audio(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.tiny_pipelines import tiny_stable_audio_pipeline, tiny_wan_pipeline
    from scipy.io import wavfile

    grid = _script("sample_grid")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red ball\nwaves\nsnow\n")
    tiny_wan_pipeline().save_pretrained(tmp_path / "wan")
    video = ["--model", str(tmp_path / "wan"), "--prompts", str(prompts), "--steps", "3",
             "--option", "num_frames=5", "--option", "height=16", "--option", "width=16",
             "--option", "max_sequence_length=16"]
    assert grid.main(video + ["--out", str(tmp_path / "clips.gif")]) == 0
    with Image.open(tmp_path / "clips.gif") as gif:
        assert gif.n_frames == 5
    assert (tmp_path / "clips_frames.png").is_file()
    tiny_stable_audio_pipeline().save_pretrained(tmp_path / "audio")
    audio = ["--model", str(tmp_path / "audio"), "--prompts", str(prompts), "--steps", "3"]
    assert grid.main(audio + ["--out", str(tmp_path / "sheet")]) == 0
    rate, clip = wavfile.read(tmp_path / "sheet" / "clip_002.wav")
    assert rate == 4 and clip.shape == (7, 2)
    # the same seeds give the same clips
    assert grid.main(audio + ["--out", str(tmp_path / "again")]) == 0
    assert np.array_equal(wavfile.read(tmp_path / "again" / "clip_002.wav")[1], clip)
    with pytest.raises(ValueError, match="--option applies to video and audio families"):
        grid.main(["--prompts", str(prompts), "--option", "num_frames=5", "--out", str(tmp_path / "g.png")])


def test_grid_script_draws_the_toy_video_world_with_its_clip_shape_and_scores_its_specs(tmp_path):
    grid = _script("sample_grid")
    args = ["--model", "toy_video", "--prompts", "toyvideo:test", "--max-prompts", "2", "--steps", "2",
            "--reward", "toy_video_verifier", "--out", str(tmp_path / "v.gif")]
    assert grid.main(args) == 0  # the verifier needs each prompt's spec: it comes with the toyvideo split
    from rewards.toyvideo.world import NUM_FRAMES

    with Image.open(tmp_path / "v.gif") as gif:
        assert gif.n_frames == NUM_FRAMES
