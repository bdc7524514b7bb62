"""A small CLIP BPE tokenizer whose vocabulary covers the toy world in whole words.

It is an ordinary :class:`transformers.CLIPTokenizer` (the class SD3 pipelines load), built
from a vocabulary of single characters (so any lowercase text still tokenizes) plus one
token per toy word, and merges that assemble each toy word from its characters.
"""

from __future__ import annotations

import string

from transformers import CLIPTokenizer

from rewards.toyworld.world import vocabulary

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
#: Longest toy prompt is 10 words; with BOS/EOS and slack this bounds every text sequence.
MODEL_MAX_LENGTH = 16
_SUFFIX = "</w>"


def _merges_for(words: list[str]) -> list[tuple[str, str]]:
    """Left-to-right merges that turn each word's characters into one token."""
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + _SUFFIX]
        left = pieces[0]
        for right in pieces[1:]:
            pair = (left, right)
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            left = left + right
    return merges


def build_toy_tokenizer(words: list[str] | None = None) -> CLIPTokenizer:
    """Build the toy CLIP tokenizer; every word in ``words`` (default: the toy vocabulary) is one token.

    BPE applies the lowest-ranked merge first, so a merge built for one word can fire inside
    another and leave it split; the loop appends the merge that joins such leftovers until
    every word is whole.
    """
    words = sorted(words or vocabulary())
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab_tokens = [BOS, EOS] + list(chars) + [c + _SUFFIX for c in chars]
    merges = _merges_for(words)
    for _ in range(10):
        tokens = list(dict.fromkeys(vocab_tokens + [a + b for a, b in merges]))
        tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=list(merges),
                            model_max_length=MODEL_MAX_LENGTH)
        split_words = [tok.tokenize(w) for w in words]
        broken = [pieces for pieces in split_words if len(pieces) != 1]
        if not broken:
            return tok
        for pieces in broken:
            left = pieces[0]
            for right in pieces[1:]:
                if (left, right) not in merges:
                    merges.append((left, right))
                left = left + right
    raise RuntimeError(f"could not build whole-word merges for {broken}")
