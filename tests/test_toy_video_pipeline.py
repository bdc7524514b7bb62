"""The toy video pipeline (Wan2.1 architecture): construction, stock loading and generation, the latent statistics
its pretraining writes into the VAE's config, and an interrupted pretraining's resumption."""

import pytest
import torch
from diffusers import WanPipeline
from helpers.pretrain_resume import check_resumes_to_the_uninterrupted_run

from genrl.toy import pretrain_video as pretrain_video_module
from genrl.toy.pretrain import PretrainError
from genrl.toy.pretrain_video import VideoPretrainConfig, pretrain_video
from genrl.toy.video_pipeline import LATENT_CHANNELS, build_toy_video_pipeline, stock_call_kwargs
from rewards.toyvideo import NUM_FRAMES

TINY = dict(vae_steps=4, vae_batch_size=2, vae_warmup_steps=1, normalise_clips=4, latent_pool=8, steps=4, batch_size=4,
            warmup_steps=1, eval_every=0, final_eval_clips_per_prompt=0, checkpoint_every=2, device="cpu", threads=1)


def test_a_saved_toy_video_pipeline_loads_and_generates_with_the_stock_pipeline(tmp_path):
    build_toy_video_pipeline(seed=0).save_pretrained(tmp_path)
    pipe = WanPipeline.from_pretrained(tmp_path, local_files_only=True)  # as it is, no arguments
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["a video of a red circle moving left", "a video of a blue square standing still"], output_type="pt",
               generator=[torch.Generator().manual_seed(i) for i in range(2)],
               **{**stock_call_kwargs(), "num_inference_steps": 2}).frames
    assert out.shape == (2, NUM_FRAMES, 3, 32, 32) and not torch.allclose(out[0], out[1])
    assert (pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal) == (4, 2)
    assert pipe.transformer.config.in_channels == LATENT_CHANNELS


def _weights(path):
    pipe = WanPipeline.from_pretrained(path, local_files_only=True)
    weights = {f"{name}.{k}": v for name in ("vae", "transformer", "text_encoder")
               for k, v in getattr(pipe, name).state_dict().items()}
    return {**weights, "latents_mean": pipe.vae.config.latents_mean, "latents_std": pipe.vae.config.latents_std}


@pytest.mark.parametrize("die_in", ["vae", "denoiser"])
def test_an_interrupted_video_pretraining_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch, die_in):
    check_resumes_to_the_uninterrupted_run(
        tmp_path, monkeypatch, run_class=pretrain_video_module._VideoRun, pretrain=pretrain_video, weights=_weights,
        config=lambda **kw: VideoPretrainConfig(**{**TINY, **kw}), die_in=die_in, changed=("vae_lr", 5e-4))


def test_the_vae_stage_writes_the_latent_statistics_the_pipeline_applies(tmp_path):
    pretrain_video(VideoPretrainConfig(out_dir=str(tmp_path / "wan"), **TINY))
    vae = WanPipeline.from_pretrained(tmp_path / "wan", local_files_only=True).vae
    mean, std = torch.tensor(vae.config.latents_mean), torch.tensor(vae.config.latents_std)
    assert mean.shape == std.shape == (LATENT_CHANNELS,) and (std > 0).all()
    assert not torch.equal(std, torch.ones(LATENT_CHANNELS))  # measured, not the defaults
    run = pretrain_video_module._VideoRun(VideoPretrainConfig(out_dir=str(tmp_path / "x"), init_from=str(tmp_path / "wan"),
                                                              **TINY), None)
    _, video = run.clips(6)
    with torch.no_grad():
        z = run.pipe.vae.encode(video).latent_dist.mean
    normalised = run.normalised(z)
    # WanPipeline decodes latents / (1 / std) + mean: the inverse of what the transformer is trained on
    torch.testing.assert_close(normalised / (1.0 / std.view(1, -1, 1, 1, 1)) + mean.view(1, -1, 1, 1, 1), z)


def test_init_from_keeps_the_vae_unless_asked_to_continue_it(tmp_path):
    base = tmp_path / "base"
    build_toy_video_pipeline(seed=3).save_pretrained(base)
    no_vae_stage = {**TINY, "steps": 1}
    pretrain_video(VideoPretrainConfig(out_dir=str(tmp_path / "kept"), init_from=str(base), **no_vae_stage))
    pretrain_video(VideoPretrainConfig(out_dir=str(tmp_path / "trained"), init_from=str(base), continue_vae=True,
                                       **no_vae_stage))
    vaes = {name: WanPipeline.from_pretrained(tmp_path / name, local_files_only=True).vae
            for name in ("base", "kept", "trained")}
    weights = {name: vae.state_dict() for name, vae in vaes.items()}
    assert all(torch.equal(weights["kept"][k], weights["base"][k]) for k in weights["base"])
    assert any(not torch.equal(weights["trained"][k], weights["base"][k]) for k in weights["base"])
    assert vaes["trained"].config.latents_std != vaes["base"].config.latents_std  # measured again


def test_bad_settings_are_named():
    with pytest.raises(PretrainError, match="prompt_dropout"):
        VideoPretrainConfig(prompt_dropout=1.0)
    with pytest.raises(PretrainError, match="latent_pool=0 must be >= 1"):
        VideoPretrainConfig(latent_pool=0)


def test_the_shipped_pipeline_loads_with_the_stock_class_in_float32_and_moves_objects():
    from genrl.toy.evaluate_video import evaluate_video_pipeline
    from genrl.toy.video_pipeline import TOY_VIDEO_PIPELINE_DIR
    from rewards.toyvideo import split

    pipe = WanPipeline.from_pretrained(TOY_VIDEO_PIPELINE_DIR, local_files_only=True)  # the stock loader, no arguments
    # the transformer and VAE ship in float16 and load as float32 modules
    assert {p.dtype for m in (pipe.transformer, pipe.vae, pipe.text_encoder) for p in m.parameters()} == {torch.float32}
    pipe.set_progress_bar_config(disable=True)
    directions = [s for s in split("test") if s.family == "direction"]
    report = evaluate_video_pipeline(pipe, directions, clips_per_prompt=1)
    assert report.strict["direction"] >= 0.5  # the gates measure 0.75 on the 8 held-out directions, 4 clips each
