"""Aesthetic, HPSv2.1 and DINOv2 rewards through their real loaders, on the toy CLIP and a tiny DINOv2."""

import pytest
import torch
import torch.nn.functional as F

from rewards import AestheticMLP, build_reward


def _images(n=3, seed=0, size=32):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_aesthetic_is_the_mlp_on_unit_clip_embeddings(tmp_path):
    clip = build_reward("clip_score", model="toy")
    dim = clip.model.visual.output_dim
    torch.manual_seed(0)
    mlp = AestheticMLP(dim)
    torch.save(mlp.state_dict(), tmp_path / "aesthetic.pth")
    reward = build_reward("aesthetic", mlp_path=str(tmp_path / "aesthetic.pth"), model="toy", pretrained=None)
    images = _images()
    with torch.no_grad():
        expected = mlp.eval()(clip.embed_images(images))
    torch.testing.assert_close(reward(images, ["a"] * 3).scores, expected)
    assert reward.differentiable
    with pytest.raises(FileNotFoundError, match="sac\\+logos"):
        build_reward("aesthetic", mlp_path=str(tmp_path / "missing.pth"), model="toy", pretrained=None)


def test_hpsv2_is_the_unclamped_cosine():
    reward = build_reward("hpsv2", checkpoint="", model="toy")
    clip = build_reward("clip_score", model="toy")
    images, prompts = _images(), ["a photo of a red circle", "a photo of two squares", "a photo of a blue cross"]
    with torch.no_grad():
        text = F.normalize(clip.model.encode_text(clip.tokenizer(prompts)), dim=-1)
        expected = (clip.embed_images(images) * text).sum(-1)
    torch.testing.assert_close(reward(images, prompts).scores, expected)


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
