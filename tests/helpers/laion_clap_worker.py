"""Scores audio through the laion_clap backend in a fresh process; run by tests/test_laion_clap_backend.py.

The working directory must be a scratch directory: the ``laion_clap`` package loads the hub repos
``roberta-base``, ``bert-base-uncased`` and ``facebook/bart-base`` by name (the tokenizers at import),
and ``from_pretrained`` takes a local directory of that name first, so tiny stand-ins are written
there (a one-layer RoBERTa of the real width, since CLAP's text projection expects 768 features).
Prints one JSON object with the scores and the package's own embeddings for the same inputs.
"""

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import RobertaConfig, RobertaModel

# byte-level BPE with no merges: a word becomes its characters ("Ġ" marks a leading space)
BPE_WORDS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "Ġ", *"abcdefghijklmnopqrstuvwxyz"]


def write_hub_standins(root: Path) -> None:
    """Tokenizer files for the three repos and tiny RoBERTa weights for ``roberta-base``."""
    vocab = json.dumps({w: i for i, w in enumerate(BPE_WORDS)})
    for repo in ("roberta-base", "facebook/bart-base"):
        (root / repo).mkdir(parents=True, exist_ok=True)
        (root / repo / "vocab.json").write_text(vocab)
        (root / repo / "merges.txt").write_text("#version: 0.2\n")
    (root / "bert-base-uncased").mkdir(exist_ok=True)
    (root / "bert-base-uncased" / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    config = RobertaConfig(vocab_size=len(BPE_WORDS), hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                           intermediate_size=64, max_position_embeddings=80, pad_token_id=1)
    torch.manual_seed(1)
    RobertaModel(config).save_pretrained(root / "roberta-base")


def main() -> None:
    write_hub_standins(Path("."))
    import laion_clap

    from rewards import build_reward

    torch.manual_seed(0)
    module = laion_clap.CLAP_Module(enable_fusion=False, amodel="HTSAT-tiny", device="cpu")
    state = module.model.state_dict()
    # as the LAION releases store it: DDP prefix, training metadata, a numpy scalar
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3,
                "best_map": np.float64(0.5)}, "clap.pt")

    torch.manual_seed(123)  # the reward builds its own, differently initialised, module before loading
    reward = build_reward("clap", backend="laion_clap", model="clap.pt", sample_rate=48_000)
    loaded = reward.model.model.state_dict()
    prompts = ["a dog barks", "piano", "rain on a roof"]
    waves = torch.randn(3, 48_000, generator=torch.Generator().manual_seed(0)) * 0.1
    scores = reward(waves, prompts).scores
    with torch.no_grad():
        audio = F.normalize(module.get_audio_embedding_from_data(x=waves, use_tensor=True), dim=-1)
        text = F.normalize(module.get_text_embedding(prompts, use_tensor=True), dim=-1)
    resampled = build_reward("clap", backend="laion_clap", model="clap.pt", sample_rate=16_000)
    low = waves[:, ::3].contiguous()
    print(json.dumps({
        "weights_equal": all(torch.equal(loaded[k], v) for k, v in state.items()),
        "scores": scores.tolist(),
        "expected": (audio * text).sum(-1).tolist(),
        "one_at_a_time": [reward(waves[i:i + 1], prompts[i:i + 1]).scores.item() for i in range(3)],
        "swapped_prompts": reward(waves, prompts[::-1]).scores.tolist(),
        "at_16k": resampled(low, prompts).scores.tolist(),
        "differentiable": reward.differentiable,
    }))


if __name__ == "__main__":
    main()
