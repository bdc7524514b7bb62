"""ImageReward rebuilt on transformers' BLIP modules, against scores computed by the image-reward package.

The fixture holds a tiny ImageReward in the package's own key layout, inputs, and the package's scores
for them (written by tests/fixtures/make_imagereward_fixture.py in an environment with the package).
"""

import pytest
import torch
from helpers.tiny_models import load_imagereward_fixture, save_tiny_imagereward
from PIL import Image
from torchvision import transforms

from rewards import build_reward
from rewards.imagereward import (
    CLIP_MEAN,
    CLIP_STD,
    ImageRewardModel,
    convert_imagereward_state_dict,
    resize_center_crop,
)


@pytest.fixture(scope="module")
def fixture():
    return load_imagereward_fixture()


def test_rebuilt_model_reproduces_the_packages_scores(fixture):
    weights, tensors, vision, text = fixture
    model = ImageRewardModel(vision, text).eval()
    model.load_state_dict(convert_imagereward_state_dict(weights))  # strict: every weight accounted for
    with torch.no_grad():
        scores = model(tensors["inputs.pixel_values"], tensors["inputs.input_ids"], tensors["inputs.attention_mask"])
    torch.testing.assert_close(scores, tensors["expected.scores"], rtol=1e-4, atol=1e-5)


def test_unknown_vision_weights_are_refused():
    with pytest.raises(KeyError, match="blip.visual_encoder.head.weight"):
        convert_imagereward_state_dict({"blip.visual_encoder.head.weight": torch.zeros(1)})


def test_preprocessing_matches_the_packages_torchvision_transform():
    image = Image.fromarray((torch.rand(45, 70, 3) * 255).to(torch.uint8).numpy())
    package = transforms.Compose([transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC),
                                  transforms.CenterCrop(32), transforms.ToTensor()])(image)
    ours = resize_center_crop(transforms.functional.to_tensor(image)[None], 32)[0]
    assert ours.shape == package.shape
    assert (ours - package).abs().mean() < 0.02  # PIL resamples uint8, torch floats: close, not equal
    square = torch.rand(1, 3, 32, 32)
    assert resize_center_crop(square, 32) is square


@pytest.fixture(scope="module")
def reward(tmp_path_factory):
    return build_reward("imagereward", **save_tiny_imagereward(tmp_path_factory.mktemp("imagereward")))


def test_reward_scores_batches_and_passes_gradients_to_pixels(reward):
    prompts = ["a red cat", "a dog on the grass", "the cat"]
    images = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(0), requires_grad=True)
    scores = reward(images, prompts).scores
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    one_by_one = torch.cat([reward(images[i:i + 1], prompts[i:i + 1]).scores for i in range(3)])
    torch.testing.assert_close(one_by_one, scores, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(reward(images, prompts[::-1]).scores, scores)  # the prompt matters
    scores.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0 and torch.isfinite(images.grad).all()
    # the pixels the model sees are CLIP-normalised, as the package's transform makes them
    pixels = reward.pixel_values(torch.ones(1, 3, 32, 32))
    torch.testing.assert_close(pixels[0, :, 0, 0], (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD))


def test_missing_or_mismatched_checkpoints_are_named(tmp_path, fixture):
    with pytest.raises(FileNotFoundError, match="imagereward: checkpoint"):
        build_reward("imagereward", model=str(tmp_path / "nope.pt"))
    weights, _, vision, _ = fixture
    torch.save(weights, tmp_path / "ImageReward.pt")
    with pytest.raises(RuntimeError, match="ImageReward.pt' does not fit"):  # tiny weights, BERT-base text encoder
        build_reward("imagereward", model=str(tmp_path), vision_config=vision)
