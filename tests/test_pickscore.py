"""PickScore through the real transformers loaders, on a tiny CLIP saved to disk."""

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from genrl.toy.tokenizer import build_toy_tokenizer
from rewards import build_reward


def test_pickscore_equals_clip_logits_over_26(tmp_path):
    tokenizer = build_toy_tokenizer()
    torch.manual_seed(0)
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": tokenizer.model_max_length,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
              "image_size": 32, "patch_size": 8}
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(tmp_path / "m")
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    processor.save_pretrained(tmp_path / "p")

    reward = build_reward("pickscore", model=str(tmp_path / "m"), processor=str(tmp_path / "p"))
    images = torch.rand(3, 3, 48, 48)
    prompts = ["a photo of a red circle", "a photo of two squares", "a photo of a blue cross"]
    scores = reward(images, prompts).scores

    inputs = processor(text=prompts, images=list((images * 255).round().to(torch.uint8)), return_tensors="pt",
                       padding=True)
    with torch.no_grad():
        logits = reward.model(**inputs).logits_per_image
    torch.testing.assert_close(scores, logits.diagonal() / 26, rtol=1e-4, atol=1e-5)
