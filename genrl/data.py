"""Prompt datasets: the toy world's splits or a user's prompt file, with per-prompt metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from genrl.toy.prompts import load_prompt_file, split
from genrl.toy.world import PromptSpec

#: ``toy:<split>`` selects a split of the embedded toy world.
TOY_PREFIX = "toy:"


@dataclass
class PromptDataset:
    """Prompts and one metadata dict per prompt (rewards read e.g. ``metadata["spec"]``)."""

    prompts: list[str]
    metadata: list[dict] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError(f"prompt source {self.source!r} contains no prompts")
        if not self.metadata:
            self.metadata = [{} for _ in self.prompts]
        if len(self.metadata) != len(self.prompts):
            raise ValueError(f"{self.source!r}: {len(self.prompts)} prompts but {len(self.metadata)} metadata entries")
        for i, prompt in enumerate(self.prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"{self.source!r}: prompt {i} is empty")

    def __len__(self) -> int:
        return len(self.prompts)


def _from_items(items: list[PromptSpec | str], source: str) -> PromptDataset:
    prompts = [it.prompt if isinstance(it, PromptSpec) else it for it in items]
    metadata = [{"spec": it} if isinstance(it, PromptSpec) else {} for it in items]
    return PromptDataset(prompts, metadata, source)


def load_prompts(source: str) -> PromptDataset:
    """``toy:train`` / ``toy:test`` / ``toy:test_ood`` (toy splits, with their specs as metadata), or a ``.txt``/``.jsonl`` file."""
    if source.startswith(TOY_PREFIX):
        return _from_items(list(split(source[len(TOY_PREFIX):])), source)
    path = Path(source).expanduser()
    return _from_items(load_prompt_file(path), str(path))


def prompt_family(metadata: dict) -> str | None:
    """The evaluation family of a prompt (a toy spec's GenEval family), or None."""
    spec = metadata.get("spec")
    return spec.family if isinstance(spec, PromptSpec) else None
