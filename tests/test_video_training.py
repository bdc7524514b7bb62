"""Text-to-video on the one trainer: a tiny Wan2.1 pipeline trained with Flow-GRPO's Wan SDE step and a per-frame
image reward, with GIF sample grids; and the per-frame reward itself."""

import numpy as np
import pytest
import torch
from helpers.tiny_pipelines import tiny_wan_pipeline
from PIL import Image

from genrl.config import load_config
from genrl.trainer import Trainer
from rewards import build_reward
from rewards.media import Media

PROMPTS = ["a red ball bouncing", "waves on a beach", "a spinning top", "snow falling"]


def test_frame_mean_is_the_image_reward_averaged_over_the_scored_frames():
    videos = torch.rand(2, 5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    videos[1, ::2] = 0.5  # flat frames compress far better
    image_reward = build_reward("jpeg_compressibility")
    for stride in (1, 2):
        reward = build_reward("frame_mean", reward="jpeg_compressibility", stride=stride)
        out = reward(Media(videos, "video", fps=8).stored(), ["a", "b"])
        frames = (videos * 255).round() / 255  # what the stored 8-bit copy holds
        expected = [np.mean([float(image_reward(frames[i, t:t + 1], ["x"]).scores[0]) for t in range(0, 5, stride)])
                    for i in range(2)]
        torch.testing.assert_close(out.scores, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-6)
        assert out.info["jpeg_compressibility/frames"].shape == (2, len(range(0, 5, stride)))
    with pytest.raises(ValueError, match="reward 'frame_mean' scores video, not image frames"):
        build_reward("frame_mean", reward="frame_mean", options={"reward": "jpeg_compressibility"})
    with pytest.raises(ValueError, match=r"expected videos of shape \(N, F, 3, H, W\), got \(2, 3, 8, 8\)"):
        build_reward("frame_mean", reward="jpeg_compressibility")(videos[:, 0], ["a", "b"])


def test_wan_trains_with_a_per_frame_reward_and_writes_gif_grids(tmp_path):
    tiny_wan_pipeline().save_pretrained(tmp_path / "tiny-wan")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    frames = "{name: frame_mean, reward: jpeg_compressibility}"
    overrides = [
        "epochs=2", f"model.pretrained={tmp_path / 'tiny-wan'}", "model.height=16", "model.width=16",
        "model.max_sequence_length=16", "model.options={num_frames: 9, fps: 8}", "sample.guidance_scale=5.0",
        "sample.step_type=wan_sde", "sample.noise_level=1.0", "sample.num_steps=4", "sample.eval_num_steps=4",
        "sample.batch_size=4", "sample.group_size=2", "sample.num_batches_per_epoch=1", "lora.rank=4", "lora.alpha=8",
        "train.ema=false", "train.learning_rate=1e-2", "reward.weights={frame_mean: 1.0}",
        "reward.options={frame_mean: {reward: jpeg_compressibility, stride: 2}}", f"reward.eval={{jpeg: {frames}}}",
        f"data.train_prompts={prompts}", f"data.test_prompts={prompts}", "log.log_with=[]",
        f"log.output_dir={tmp_path / 'run'}"]
    trainer = Trainer(load_config(None, overrides))
    assert trainer.adapter.family == "wan" and trainer.adapter.media_kind == "video"
    batch = trainer.rollouts.sample_batch(0, 0, [0, 0, 1, 1])
    assert batch.media.tensor.shape == (4, 9, 3, 16, 16) and batch.media.tensor.dtype == torch.uint8
    record = trainer.train()
    assert record["train/first_ratio_max_dev"] == 0.0 and "eval/jpeg" in record
    with Image.open(tmp_path / "run" / "grids" / "eval-epoch-000002.gif") as gif:
        assert gif.n_frames == 9
    assert (tmp_path / "run" / "grids" / "eval-epoch-000002_frames.png").is_file()
    assert (tmp_path / "run" / "final" / "lora" / "pytorch_lora_weights.safetensors").is_file()
