"""PickScore through the real transformers loaders, on a tiny CLIP saved to disk."""

import torch
from helpers.tiny_models import save_tiny_clip

from rewards import build_reward


def test_pickscore_equals_clip_logits_over_26(tmp_path):
    processor = save_tiny_clip(tmp_path / "m", tmp_path / "p")

    reward = build_reward("pickscore", model=str(tmp_path / "m"), processor=str(tmp_path / "p"))
    images = torch.rand(3, 3, 48, 48)
    prompts = ["a photo of a red circle", "a photo of two squares", "a photo of a blue cross"]
    scores = reward(images, prompts).scores

    inputs = processor(text=prompts, images=list((images * 255).round().to(torch.uint8)), return_tensors="pt",
                       padding=True)
    with torch.no_grad():
        logits = reward.model(**inputs).logits_per_image
    torch.testing.assert_close(scores, logits.diagonal() / 26, rtol=1e-4, atol=1e-5)
