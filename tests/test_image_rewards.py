"""Aesthetic, HPSv2.1 and DINOv2 rewards through their real loaders, on the toy CLIP and a tiny DINOv2."""

import pytest
import torch

from rewards import build_reward


def _images(n=3, seed=0, size=32):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


#: The released predictor's linear layers (sac+logos+ava1-l14-linearMSE.pth): state-dict index, out features.
#: Its dropouts sit at 1, 3 and 5, and there is no activation: the head is one affine map.
AESTHETIC_LAYERS = [(0, 1024), (2, 128), (4, 64), (6, 16), (7, 1)]


def _toy_open_clip(**kwargs):
    """The toy CLIP through open_clip's own loader: a model separate from the reward's, its eval transform
    (resize, centre crop, ToTensor, the checkpoint's mean and std) and its tokenizer."""
    import open_clip

    from genrl.toy.clip import TOY_CLIP_DIR

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{TOY_CLIP_DIR}", **kwargs)
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{TOY_CLIP_DIR}")


def _uint8_images(n=3, seed=0, size=32):
    """Random uint8 images at the toy CLIP's input size, as PIL images (the reference scripts' input) and as
    the float tensor in [0, 1] a trainer hands a reward."""
    from PIL import Image

    pixels = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return [Image.fromarray(p.numpy()) for p in pixels], pixels.permute(0, 3, 1, 2).float() / 255


def test_aesthetic_is_the_linear_head_on_unit_clip_embeddings(tmp_path):
    model, preprocess, _ = _toy_open_clip()
    dim = model.visual.output_dim
    g = torch.Generator().manual_seed(0)
    state, width = {}, dim
    for index, out in AESTHETIC_LAYERS:  # a checkpoint laid out as the released one
        state[f"layers.{index}.weight"] = torch.randn(out, width, generator=g) / width ** 0.5
        state[f"layers.{index}.bias"] = 0.1 * torch.randn(out, generator=g)
        width = out
    torch.save(state, tmp_path / "aesthetic.pth")
    reward = build_reward("aesthetic", mlp_path=str(tmp_path / "aesthetic.pth"), model="toy", pretrained=None)
    pil, images = _uint8_images()
    # the predictor's reference script: CLIP image features of the preprocessed image, L2-normalised, then the
    # head (eval mode: dropout off), here as the affine maps it is, in float64
    with torch.no_grad():
        features = model.encode_image(torch.stack([preprocess(im) for im in pil])).double()
    h = features / features.norm(dim=-1, keepdim=True)
    for index, _ in AESTHETIC_LAYERS:
        h = h @ state[f"layers.{index}.weight"].double().T + state[f"layers.{index}.bias"].double()
    expected = h.squeeze(-1)
    scores = reward(images, ["a"] * 3).scores
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-5)
    assert expected.std() > 1e-3  # the images score differently, so a mix-up of images would show
    assert reward.differentiable
    with pytest.raises(FileNotFoundError, match="sac\\+logos"):
        build_reward("aesthetic", mlp_path=str(tmp_path / "missing.pth"), model="toy", pretrained=None)


def test_hpsv2_is_the_unclamped_cosine_of_the_clip_features():
    reward = build_reward("hpsv2", checkpoint="", model="toy")
    model, preprocess, tokenizer = _toy_open_clip(output_dict=True)
    pil, images = _uint8_images()
    prompts = ["a photo of a red circle", "a photo of two squares", "a photo of a blue cross"]
    # hpsv2's scoring: the model's (unit-norm) image and text features, the diagonal of their product, with
    # no logit scale and no clamp
    with torch.no_grad():
        out = model(torch.stack([preprocess(im) for im in pil]), tokenizer(prompts))
    expected = torch.diagonal(out["image_features"].double() @ out["text_features"].double().T)
    torch.testing.assert_close(reward(images, prompts).scores.double(), expected, rtol=1e-4, atol=1e-5)
    # every image against every prompt: some pairs have a negative cosine, which the score keeps
    grid = torch.stack([reward(images, [p] * 3).scores for p in prompts], 1).double()
    reference = out["image_features"].double() @ out["text_features"].double().T
    torch.testing.assert_close(grid, reference, rtol=1e-4, atol=1e-5)
    assert (reference < 0).any() and (reference > 0).any()


def test_dino_similarity_is_one_for_the_reference_itself(tmp_path):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                             image_size=32, patch_size=8)).save_pretrained(tmp_path / "dino")
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(tmp_path / "dino")
    reward = build_reward("dino_similarity", model=str(tmp_path / "dino"))
    images = _images(2)
    other = _images(2, seed=1)
    same = reward(images, ["x", "y"], [{"reference_image": images[0]}, {"reference_image": images[1]}]).scores
    torch.testing.assert_close(same, torch.ones(2), atol=1e-5, rtol=0)
    diff = reward(images, ["x", "y"], [{"reference_image": other[0]}, {"reference_image": other[1]}]).scores
    assert (diff < 1 - 1e-4).all()
    with pytest.raises(KeyError, match="reference_image"):
        reward(images, ["x", "y"])
