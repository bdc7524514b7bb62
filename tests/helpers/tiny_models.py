"""Tiny models of real architectures, saved with save_pretrained so tests go through the real loaders."""

from pathlib import Path

import torch


def save_tiny_clip(model_dir: Path, processor_dir: Path, vision_layers: int = 2, seed: int = 0):
    """A tiny transformers CLIPModel (toy tokenizer) and its CLIPProcessor; returns the processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from genrl.toy.tokenizer import build_toy_tokenizer

    tokenizer = build_toy_tokenizer()
    torch.manual_seed(seed)
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": tokenizer.model_max_length,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": vision_layers,
              "num_attention_heads": 4, "image_size": 32, "patch_size": 8}
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(model_dir)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    processor.save_pretrained(processor_dir)
    return processor


TINY_CHAT_TEMPLATE = ("{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
                      "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
                      "{% if add_generation_prompt %} ASSISTANT:{% endif %}")


def save_tiny_vlm(model_dir: Path, seed: int = 0) -> None:
    """A tiny LLaVA (CLIP vision tower + Llama) with a word-level tokenizer and a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    words = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:", "Yes", "No", "yes", "no",
             *"0123456789", "Does", "this", "image", "show", "a", "photo", "of", "red", "circle", "two", "squares"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(["<image>", "<pad>", "<s>", "</s>"])  # split out of the expanded "<image><image>..."
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>")
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                               tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=TINY_CHAT_TEMPLATE)
    processor.save_pretrained(model_dir)
    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=32, patch_size=8),
        text_config=LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                                pad_token_id=0, bos_token_id=2, eos_token_id=3),
        image_token_index=words.index("<image>"), vision_feature_select_strategy="default", vision_feature_layer=-1)
    LlavaForConditionalGeneration(config).save_pretrained(model_dir)


def save_tiny_clap(model_dir: Path, seed: int = 0) -> None:
    """A tiny transformers ClapModel (HTSAT audio tower, RoBERTa text tower) with its ClapProcessor."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        ClapTextConfig,
        RobertaTokenizerFast,
    )

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["a dog barking", "rain on a window", "a piano melody", "white noise", "a sine tone"],
                            vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    model_dir.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(model_dir))
    tokenizer = RobertaTokenizerFast(vocab_file=str(model_dir / "vocab.json"), merges_file=str(model_dir / "merges.txt"),
                                     model_max_length=32)
    # as laion/clap-htsat-unfused: no fusion channels, clips under 10 s repeated to fill the window
    ClapProcessor(feature_extractor=ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad"), tokenizer=tokenizer).save_pretrained(model_dir)
    torch.manual_seed(seed)
    text = ClapTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=40, pad_token_id=tokenizer.pad_token_id,
                          projection_dim=16)
    audio = ClapAudioConfig(depths=[1, 1], num_attention_heads=[1, 2], patch_embeds_hidden_size=16, hidden_size=32,
                            projection_dim=16, num_hidden_layers=2)
    ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16)).save_pretrained(model_dir)


IMAGEREWARD_FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "imagereward_tiny.safetensors"


def load_imagereward_fixture() -> tuple[dict, dict, dict, dict]:
    """The fixture's weights (package key layout), all its tensors (inputs, expected scores) and its
    vision and text configs."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(IMAGEREWARD_FIXTURE)
    with safe_open(IMAGEREWARD_FIXTURE, "pt") as f:
        meta = f.metadata()
    weights = {k.removeprefix("weights."): v for k, v in tensors.items() if k.startswith("weights.")}
    return weights, tensors, json.loads(meta["vision"]), json.loads(meta["text"])


def save_tiny_imagereward(root: Path) -> dict:
    """The fixture's tiny ImageReward as a release-layout ``ImageReward.pt`` plus a BERT vocabulary in ``root``;
    returns the ``imagereward`` reward options that load it."""
    weights, _, vision, text = load_imagereward_fixture()
    root.mkdir(parents=True, exist_ok=True)
    torch.save(weights, root / "ImageReward.pt")  # a plain state dict, as the release ships it
    (root / "bert").mkdir(exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "cat", "dog", "on", "the", "grass"]
    (root / "bert" / "vocab.txt").write_text("\n".join(words) + "\n")
    return {"model": str(root), "tokenizer": str(root / "bert"), "text_config": text, "vision_config": vision}
