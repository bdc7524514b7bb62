import numpy as np
import pytest
from diffusers import StableDiffusion3Pipeline

from genrl.models.loading import load_pipeline, resolve_model_path
from genrl.toy.evaluate import generate
from genrl.toy.evaluate import main as evaluate_main
from genrl.toy.pipeline import TOY_PIPELINE_DIR, load_toy_pipeline

PROMPTS = ["a photo of a red circle", "a photo of two squares", "a photo of a cross left of a triangle"]


def _sample(pipe, prompts=PROMPTS, seeds=(0, 1, 2), **kw):
    return generate(pipe, prompts, list(seeds), num_inference_steps=4, **kw)


def test_toy_pipeline_is_sd3_small_and_loads_with_the_plain_stock_loader():
    pipe = StableDiffusion3Pipeline.from_pretrained(TOY_PIPELINE_DIR, local_files_only=True)
    assert type(pipe.transformer).__name__ == "SD3Transformer2DModel"
    assert type(pipe.text_encoder_3).__name__ == "T5EncoderModel"
    size = sum(p.stat().st_size for p in TOY_PIPELINE_DIR.rglob("*") if p.is_file())
    assert size < 20 * 2**20


def test_the_stock_default_call_draws_what_t5_free_sampling_draws(toy_pipe):
    """The stock call pads 256 tokens of the null T5 (zeros); the transformer was trained to ignore them."""
    prompts = ["a photo of a red circle", "a photo of a blue square left of a yellow cross",
               "a photo of three triangles", "a photo of a green cross above a purple circle"]
    none = generate(toy_pipe, prompts, range(4), num_inference_steps=8, max_sequence_length=0)
    stock = generate(toy_pipe, prompts, range(4), num_inference_steps=8, max_sequence_length=None)  # default: 256
    without_t5 = StableDiffusion3Pipeline.from_pretrained(TOY_PIPELINE_DIR, text_encoder_3=None, tokenizer_3=None,
                                                          local_files_only=True)
    without_t5.set_progress_bar_config(disable=True)
    # the null T5 emits exactly the zeros diffusers substitutes for a dropped T5
    np.testing.assert_array_equal(stock, generate(without_t5, prompts, range(4), num_inference_steps=8,
                                                  max_sequence_length=None))
    # the scale: other seeds' images of the same prompts (the weights before the null-T5 stage gave 0.7 of it, 0.13 now)
    other_seeds = generate(toy_pipe, prompts, range(4, 8), num_inference_steps=8, max_sequence_length=0)
    assert np.abs(stock - none).mean() < 0.3 * np.abs(other_seeds - none).mean()


def test_sampling_is_deterministic_and_batch_invariant(toy_pipe):
    a = _sample(toy_pipe)
    b = _sample(toy_pipe)
    assert a.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    one_by_one = np.concatenate([_sample(toy_pipe, [p], [s]) for p, s in zip(PROMPTS, (0, 1, 2))])
    np.testing.assert_allclose(a, one_by_one, atol=1e-4)  # batched convolutions round differently
    assert not np.allclose(a, _sample(toy_pipe, seeds=(3, 4, 5)))


def test_save_and_reload_gives_identical_output(toy_pipe, tmp_path):
    toy_pipe.save_pretrained(tmp_path / "copy")
    again = load_pipeline(tmp_path / "copy")
    again.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(_sample(toy_pipe), _sample(again))


def test_evaluate_command_prints_a_table(capsys, tmp_path):
    assert evaluate_main(["--images-per-prompt", "1", "--steps", "2", "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "| single_object |" in out and "**overall**" in out
    assert (tmp_path / "s.json").read_text().startswith("{")


def test_missing_models_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        resolve_model_path(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        load_pipeline(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="pretrain_toy"):
        load_toy_pipeline(tmp_path / "empty")
    with pytest.raises(OSError, match="some-org/not-a-model"):
        load_pipeline("some-org/not-a-model")
    with pytest.raises(FileNotFoundError, match="no pytorch_lora_weights.safetensors"):
        load_pipeline("toy", lora=tmp_path / "empty")
