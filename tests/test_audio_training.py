"""Text-to-audio on the one trainer: a tiny Stable Audio pipeline trained by Flow-GRPO's clipped objective with
the ``ddim`` step (Stable Audio's first-order update), scored by a tiny CLAP, with WAV sample sheets, a peft
LoRA export and a merged pipeline the stock class loads."""

import pytest
import torch
from diffusers import StableAudioPipeline
from helpers.tiny_models import save_tiny_clap
from helpers.tiny_pipelines import tiny_stable_audio_pipeline
from scipy.io import wavfile

from genrl.config import ConfigError, load_config
from genrl.models.loading import load_pipeline
from genrl.trainer import Trainer

PROMPTS = ["a low drone", "two short beeps", "a rising tone", "rain on a window"]


def _overrides(tmp_path, **changes):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    clap = f"{{model: {tmp_path / 'clap'}, sample_rate: 4}}"  # the tiny pipeline's VAE decodes at 4 Hz
    values = {
        "epochs": "2", "model.pretrained": str(tmp_path / "tiny-audio"), "sample.guidance_scale": "3.0",
        "sample.step_type": "ddim", "sample.noise_level": "1.0", "sample.num_steps": "4", "sample.eval_num_steps": "4",
        "sample.batch_size": "4", "sample.group_size": "2", "sample.num_batches_per_epoch": "1", "lora.rank": "4",
        "lora.alpha": "8", "train.ema": "false", "train.learning_rate": "1e-2", "reward.weights": "{clap: 1.0}",
        "reward.options": f"{{clap: {clap}}}", "reward.eval": f"{{clap: {{name: clap, {clap[1:-1]}}}}}",
        "data.train_prompts": str(prompts), "data.test_prompts": str(prompts), "log.log_with": "[]",
        "log.output_dir": str(tmp_path / "run"), **changes}
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture()
def audio_world(tmp_path):
    tiny_stable_audio_pipeline().save_pretrained(tmp_path / "tiny-audio")
    save_tiny_clap(tmp_path / "clap")
    return tmp_path


def test_stable_audio_trains_with_a_clap_reward_and_writes_wav_sheets(audio_world):
    trainer = Trainer(load_config(None, _overrides(audio_world)))
    assert trainer.adapter.family == "stable_audio" and trainer.adapter.media_kind == "audio"
    batch = trainer.rollouts.sample_batch(0, 0, [0, 0, 1, 1])
    assert batch.media.kind == "audio" and batch.media.quantized and batch.media.tensor.device.type == "cpu"
    assert batch.rewards.shape == (4,)  # scored when decoded, before the CPU copy
    record = trainer.train()
    assert record["train/first_ratio_max_dev"] == 0.0 and "eval/clap" in record
    sheet = audio_world / "run" / "grids" / "eval-epoch-000002"
    rate, clip = wavfile.read(sheet / "clip_000.wav")
    assert rate == 4 and clip.shape == (7, 2)
    assert (sheet / "index.html").read_text().count("<audio controls") == len(PROMPTS)
    final = audio_world / "run" / "final"
    assert (final / "lora" / "adapter_config.json").is_file()  # peft's format: the DiT has no diffusers loader
    merged = StableAudioPipeline.from_pretrained(final / "pipeline")
    assert not any("lora_" in name for name, _ in merged.transformer.named_parameters())
    # the peft-format LoRA loads through genrl's loader (what `evaluate_audio --lora` uses) and equals the merge
    with_lora = load_pipeline(str(audio_world / "tiny-audio"), lora=final / "lora")
    x, t = torch.randn(1, 3, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0.5])
    context, global_token = torch.randn(1, 3, 4), torch.randn(1, 1, 8)
    base = load_pipeline(str(audio_world / "tiny-audio"))
    outputs = [pipe.transformer(x, t, encoder_hidden_states=context, global_hidden_states=global_token,
                                rotary_embedding=None, return_dict=False)[0] for pipe in (with_lora, merged, base)]
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-4)
    assert (outputs[2] - outputs[1]).abs().max() > 1e-3  # training moved it: the comparison can fail


def test_a_reward_of_another_modality_or_rate_is_a_config_error(audio_world):
    with pytest.raises(ConfigError, match=r"reward.weights.jpeg_compressibility: reward 'jpeg_compressibility' "
                                          r"scores image, not audio \(model family 'stable_audio' generates audio\)"):
        Trainer(load_config(None, _overrides(audio_world, **{"reward.weights": "{jpeg_compressibility: 1.0}",
                                                             "reward.options": "{}"})))
    with pytest.raises(ConfigError, match=r"reward.eval.clap: reward 'clap' expects audio at 48000 Hz \(its "
                                          r"sample_rate option\); the media is at 4 Hz"):
        Trainer(load_config(None, _overrides(audio_world, **{
            "reward.eval": f"{{clap: {{name: clap, model: {audio_world / 'clap'}}}}}"})))
    nested = f"{{name: ensemble, options: {{members: [{{name: clap, options: {{model: {audio_world / 'clap'}}}}}]}}}}"
    with pytest.raises(ConfigError, match=r"reward.train\[0\]: reward 'clap' expects audio at 48000 Hz"):
        Trainer(load_config(None, _overrides(audio_world, **{"reward.weights": "{toy_verifier: 1.0}",
                                                             "reward.options": "{toy_verifier: {mode: partial}}",
                                                             "reward.train": f"[{nested}]"})))
