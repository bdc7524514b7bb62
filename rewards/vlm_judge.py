"""A vision-language model as a judge: a reward from the probabilities of its answer tokens.

One forward pass per image (no sampling): the chat prompt holds the image and a question, and the
next-token distribution after the assistant turn gives

- ``mode="yes_no"``: ``P(yes) = p_yes / (p_yes + p_no)``, summing each answer's spellings ("Yes",
  " yes", ...); the artifact reward of the robustness papers is ``1 - P(yes)`` to "does this image
  contain artifacts?" (``invert=True``; the ``artifact_judge`` reward below);
- ``mode="digits"``: the expected digit ``sum_d d p(d) / sum_d p(d)`` over ``digits`` (e.g. 1-5),
  rescaled to [0, 1], as MotionNFT's MLLM score reads a 0-5 rating.

With ``with_source=True`` (image editing) the chat holds the sample's source image (``metadata["image"]``) before
the edit, and the question (default :data:`EDIT_QUESTION`, rated "0".."5": MotionNFT's ``E[score] / 5``) names the
instruction.

Any ``AutoModelForImageTextToText`` checkpoint with a chat template loads (Qwen2.5-VL, LLaVA,
Idefics, ...); ``trust_remote_code`` stays off unless asked for.
"""

from __future__ import annotations

import torch

from .base import Reward, RewardOutput
from .registry import register_reward

ARTIFACT_QUESTION = ("Does this image contain visual artifacts, such as distorted or broken objects, "
                     "unnatural textures, noise or blur? Answer Yes or No.")
ALIGNMENT_QUESTION = 'Does this image show "{prompt}"? Answer Yes or No.'
EDIT_QUESTION = ('The first image is the original and the second is its edit for the instruction "{prompt}". Rate from 0 '
                 'to 5 how well the edit follows the instruction and keeps everything else. Answer with one digit.')


@register_reward("vlm_judge")
class VLMJudgeReward(Reward):
    """Score images by a VLM's answer-token probabilities (see the module docstring).

    ``question`` may use ``{prompt}``; ``yes_words`` / ``no_words`` are the spellings whose first
    token counts as each answer; ``digits`` are the rating values for ``mode="digits"``. ``with_source`` rates
    edits: the source image comes first (see the module docstring; then ``question`` and ``digits`` default to
    :data:`EDIT_QUESTION` and 0-5).
    """

    def __init__(self, model: str, question: str | None = None, mode: str = "yes_no",
                 invert: bool = False, yes_words: tuple[str, ...] = ("Yes", "yes", " Yes", " yes"),
                 no_words: tuple[str, ...] = ("No", "no", " No", " no"), digits: tuple[int, ...] | None = None,
                 batch_size: int = 8, device: str | torch.device = "cpu", dtype: str = "float32",
                 trust_remote_code: bool = False, with_source: bool = False) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if mode not in ("yes_no", "digits"):
            raise ValueError(f"vlm_judge mode must be 'yes_no' or 'digits', got {mode!r}")
        self.with_source = with_source
        if with_source:
            self.required_metadata = ("image",)
        question = question or (EDIT_QUESTION if with_source else ALIGNMENT_QUESTION)
        digits = digits or ((0, 1, 2, 3, 4, 5) if with_source else (1, 2, 3, 4, 5))
        self.device = torch.device(device)
        self.processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
        self.model = AutoModelForImageTextToText.from_pretrained(
            model, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code).to(self.device).eval()
        self.question, self.mode, self.invert, self.batch_size = question, mode, invert, batch_size
        if mode == "yes_no":
            self.answer_ids = [self._first_ids(yes_words, "yes_words"), self._first_ids(no_words, "no_words")]
        else:
            self.digits = tuple(int(d) for d in digits)
            self.answer_ids = [self._first_ids((str(d),), f"digit {d}") for d in self.digits]

    def _first_ids(self, words, what: str) -> list[int]:
        """The distinct first token ids of ``words``; an unknown spelling is skipped, none at all is an error."""
        tok = self.processor.tokenizer
        ids = []
        for word in words:
            encoded = tok.encode(word, add_special_tokens=False)
            if encoded and encoded[0] != tok.unk_token_id and encoded[0] not in ids:
                ids.append(encoded[0])
        if not ids:
            raise ValueError(f"vlm_judge: the tokenizer has no token for {what} {list(words)}")
        return ids

    def _chat(self, prompt: str) -> str:
        question = self.question.format(prompt=prompt) if "{prompt}" in self.question else self.question
        images = [{"type": "image"}] * (2 if self.with_source else 1)
        messages = [{"role": "user", "content": [*images, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    @torch.no_grad()
    def answer_probabilities(self, images: torch.Tensor, prompts: list[str],
                             sources: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``(N, A)`` probabilities of the answers (yes/no, or each digit), renormalised over the answers;
        ``sources`` (``(3, H, W)`` in [0, 1], one per image) are shown first when the judge rates edits.

        Rows are batched only with rows of the same token length, so no padding shifts positions (a
        plain forward pass, unlike ``generate``, does not derive positions from the attention mask).
        """
        texts = [self._chat(p) for p in prompts]
        groups: dict[int, list[int]] = {}
        for i, text in enumerate(texts):
            groups.setdefault(len(self.processor.tokenizer(text)["input_ids"]), []).append(i)
        out = torch.empty(len(texts), len(self.answer_ids))
        for rows in groups.values():
            for start in range(0, len(rows), self.batch_size):
                idx = rows[start:start + self.batch_size]
                pixels = [_uint8(images[i]) for i in idx]
                if self.with_source:
                    if sources is None:
                        raise ValueError("vlm_judge with_source=True needs each sample's source image")
                    pixels = [p for i, edit in zip(idx, pixels) for p in (_uint8(sources[i]), edit)]
                inputs = self.processor(text=[texts[i] for i in idx], images=pixels, return_tensors="pt")
                inputs = inputs.to(self.device)
                if "pixel_values" in inputs:
                    inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
                probs = self.model(**inputs).logits[:, -1].float().softmax(-1)
                mass = torch.stack([probs[:, ids].sum(-1) for ids in self.answer_ids], dim=-1)
                out[idx] = (mass / mass.sum(-1, keepdim=True).clamp(min=1e-12)).cpu()
        return out

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        sources = None
        if self.with_source:
            from .motion_alignment import image_from_metadata

            sources = [image_from_metadata(m["image"], "source", i) for i, m in enumerate(metadata)]
        probs = self.answer_probabilities(images, prompts, sources)
        if self.mode == "yes_no":
            p_yes = probs[:, 0]
            return RewardOutput(1 - p_yes if self.invert else p_yes, {"p_yes": p_yes.tolist()})
        values = torch.tensor(self.digits, dtype=torch.float32)
        expected = probs @ values
        lo, hi = values.min(), values.max()
        scores = (expected - lo) / (hi - lo) if hi > lo else torch.ones_like(expected)
        return RewardOutput(1 - scores if self.invert else scores, {"expected_rating": expected.tolist()})


def _uint8(image: torch.Tensor) -> torch.Tensor:
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


@register_reward("artifact_judge")
class ArtifactJudgeReward(VLMJudgeReward):
    """The artifact paper's VLM reward: ``1 - P(yes)`` to "does this image contain artifacts?"."""

    def __init__(self, model: str, question: str = ARTIFACT_QUESTION, **options) -> None:
        super().__init__(model, question=question, mode="yes_no", invert=True, **options)
