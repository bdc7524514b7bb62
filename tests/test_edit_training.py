"""Editing families train end to end: the trainer carries each prompt's source image from the prompt file
through sampling, the on-policy ratio, evaluation and export, and refuses a prompt without one."""

import json

import pytest
import torch
from diffusers import QwenImageEditPlusPipeline
from helpers.tiny_pipelines import tiny_flux_kontext_pipeline, tiny_qwen_image_edit_pipeline
from PIL import Image

from genrl.config import ConfigError, load_config
from genrl.trainer import Trainer

PROMPTS = ["move the red circle to the left", "make the square green"]

# each editing family: its tiny pipeline and the model / guidance settings of its test run
EDIT_FAMILIES = {
    "flux_kontext": (tiny_flux_kontext_pipeline,
                     ["model.max_sequence_length=16", "model.options={auto_resize: false, max_area: 1024}",
                      "sample.guidance_scale=2.5"]),
    # true CFG with the negative prompt, norm-rescaled, in the trainer's rollouts and evaluation
    "qwen_image_edit": (tiny_qwen_image_edit_pipeline,
                        ["model.options={condition_area: 1024, negative_prompt: ' '}", "sample.guidance_scale=4.0"]),
    # Qwen-Image-Edit-2509's pipeline; its prompts name two sources each (multi-image editing)
    "qwen_image_edit_plus": (lambda: tiny_qwen_image_edit_pipeline(pipeline_class=QwenImageEditPlusPipeline),
                             ["model.options={condition_area: 1024, vl_condition_area: 1024}",
                              "sample.guidance_scale=1.0"]),
}
MULTI_IMAGE = {"qwen_image_edit_plus"}


@pytest.mark.parametrize("family", sorted(EDIT_FAMILIES))
def test_the_trainer_carries_source_images_from_the_prompt_file(tmp_path, family):
    build, family_overrides = EDIT_FAMILIES[family]
    build().save_pretrained(tmp_path / "tiny")
    for i in range(2):
        Image.fromarray((torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(i)) * 255).byte().numpy()).save(
            tmp_path / f"source{i}.png")
    prompts = tmp_path / "edits.jsonl"  # image paths relative to the prompt file
    sources = [[f"source{i}.png", f"source{1 - i}.png"] if family in MULTI_IMAGE else f"source{i}.png"
               for i in range(2)]
    prompts.write_text("".join(json.dumps({"prompt": p, "image": sources[i]}) + "\n" for i, p in enumerate(PROMPTS)))
    overrides = [
        "epochs=1", f"model.pretrained={tmp_path / 'tiny'}", "model.height=32", "model.width=32", *family_overrides,
        "sample.num_steps=3", "sample.eval_num_steps=3", "sample.batch_size=4", "sample.group_size=2",
        "sample.num_batches_per_epoch=1", "sample.noise_level=0.9", "lora.rank=4", "lora.alpha=8", "train.ema=false",
        "train.learning_rate=1e-2", "reward.weights={jpeg_compressibility: 1.0}", "reward.options={}",
        "reward.eval={jpeg: {name: jpeg_compressibility}}", f"data.train_prompts={prompts}",
        f"data.test_prompts={prompts}", "log.log_with=[]", f"log.output_dir={tmp_path / 'run'}"]
    trainer = Trainer(load_config(None, overrides))
    assert trainer.adapter.family == family
    batch = trainer.rollouts.sample_batch(0, 0, [0, 1])
    resolved = lambda name: str((tmp_path / name).resolve())
    expected = [resolved("source1.png"), resolved("source0.png")] if family in MULTI_IMAGE else resolved("source1.png")
    assert batch.metadata[1]["image"] == expected
    record = trainer.train()
    assert record["train/first_ratio_max_dev"] == 0.0 and "eval/jpeg" in record
    assert (tmp_path / "run" / "final" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "run" / "final" / "pipeline" / "model_index.json").is_file()
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"prompt": PROMPTS[0], "image": "source0.png"}) + "\n"
                      + json.dumps({"prompt": PROMPTS[1]}) + "\n")
    trainer = Trainer(load_config(None, [o.replace(str(prompts), str(broken)) for o in overrides]
                                  + [f"log.output_dir={tmp_path / 'run2'}"]))
    with pytest.raises(ConfigError, match="data.train_prompts: prompt 1 has no 'image' field"):
        trainer.rollouts.sample_batch(0, 0, [0, 1])
    # their VL embeddings are padded per batch and depend on the image: not cached, said at set-up
    with pytest.raises(ConfigError, match=f"sample.cache_prompt_embeddings: model family '{family}' does not cache"):
        Trainer(load_config(None, [*overrides, "sample.cache_prompt_embeddings=true", f"log.output_dir={tmp_path / 'r3'}"]))


def test_an_option_the_family_lacks_is_a_config_error(tmp_path):
    tiny_qwen_image_edit_pipeline().save_pretrained(tmp_path / "tiny")
    cfg = load_config(None, [f"model.pretrained={tmp_path / 'tiny'}", "model.max_sequence_length=77",
                             "log.log_with=[]", f"log.output_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match="model.max_sequence_length=77: model family 'qwen_image_edit' has no such"):
        Trainer(cfg)


def test_multi_image_sources_must_agree_within_a_batch():
    from genrl.models import build_adapter

    adapter = build_adapter("auto", tiny_qwen_image_edit_pipeline(pipeline_class=QwenImageEditPlusPipeline),
                            height=32, width=32, condition_area=1024, vl_condition_area=1024, guidance_scale=1.0)
    square = torch.rand(3, 32, 32)
    cond = adapter.encode(PROMPTS, conditions=[{"image": [square, square]}] * 2)
    # 32 x 32 through the x4 VAE, packed 2 x 2: a 4 x 4 grid of tokens per source, both on the sequence
    assert cond.condition_grids == ((1, 4, 4), (1, 4, 4)) and cond.image_latents.shape[:2] == (2, 32)
    with pytest.raises(ValueError, match=r"condition 0 gives token grids \[\(1, 4, 4\), \(1, 4, 4\)\], condition 1 "):
        adapter.encode(PROMPTS, conditions=[{"image": [square, square]}, {"image": square}])
    with pytest.raises(ValueError, match="condition 0: 'image' is an empty list"):
        adapter.encode(PROMPTS, conditions=[{"image": []}, {"image": square}])
