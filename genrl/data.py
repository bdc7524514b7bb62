"""Prompt datasets: the toy world's splits or a user's prompt file, with per-prompt metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rewards.toyworld.prompts import load_prompt_records, split
from rewards.toyworld.world import PromptSpec

#: ``toy:<split>`` selects a split of the embedded toy world, ``toyedit:<split>`` one of the toy edit world,
#: ``toyaudio:<split>`` one of the toy audio world, ``toyvideo:<split>`` one of the toy video world. Any of them
#: takes a family selection after a slash, e.g. ``toyedit:train/recolor`` or ``toy:train/position,color_attr``.
TOY_PREFIX = "toy:"
TOY_EDIT_PREFIX = "toyedit:"
TOY_AUDIO_PREFIX = "toyaudio:"
TOY_VIDEO_PREFIX = "toyvideo:"


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


def _from_records(records: list[tuple[PromptSpec | str, dict]], source: str) -> PromptDataset:
    prompts = [it.prompt if isinstance(it, PromptSpec) else it for it, _ in records]
    metadata = [{**fields, "spec": it} if isinstance(it, PromptSpec) else dict(fields) for it, fields in records]
    return PromptDataset(prompts, metadata, source)


def toy_edit_dataset(name: str, source: str) -> PromptDataset:
    """A toy edit split: each edit's instruction, with its spec, rendered source (``image``) and ground-truth
    edit (``target``) as PIL images in its metadata (what a prompt file's image paths load as)."""
    from PIL import Image

    from rewards.toyedit.splits import edit_split
    from rewards.toyedit.world import render_pair

    metadata = []
    for spec in edit_split(name):
        source_image, target = render_pair(spec)
        metadata.append({"spec": spec, "image": Image.fromarray(source_image), "target": Image.fromarray(target)})
    return PromptDataset([m["spec"].instruction for m in metadata], metadata, source)


def load_prompts(source: str) -> PromptDataset:
    """The prompts of ``source`` (see :func:`_load_source`); a toy split may name families after a slash
    (``toyedit:train/move,swap``) to keep only those (:func:`select_families`)."""
    base, slash, families = source.partition("/")
    if slash and base.startswith((TOY_PREFIX, TOY_EDIT_PREFIX, TOY_AUDIO_PREFIX, TOY_VIDEO_PREFIX)):
        return select_families(_load_source(base), families.split(","), source)
    return _load_source(source)


def select_families(dataset: PromptDataset, families: list[str], source: str) -> PromptDataset:
    """The prompts of ``dataset`` whose family (:func:`prompt_family`) is one of ``families``; an unknown family
    is named with the ones the source has."""
    present = {prompt_family(m) for m in dataset.metadata}
    unknown = [f for f in families if f not in present]
    if unknown:
        raise ValueError(f"prompt source {source!r}: no family {unknown[0]!r}; it has {sorted(f for f in present if f)}")
    keep = [i for i, m in enumerate(dataset.metadata) if prompt_family(m) in families]
    return PromptDataset([dataset.prompts[i] for i in keep], [dataset.metadata[i] for i in keep], source)


def _load_source(source: str) -> PromptDataset:
    """``toy:train`` / ``toy:test`` / ``toy:test_ood`` (toy splits, with their specs as metadata), ``toyedit:train`` /
    ``toyedit:test`` (toy edit triples), ``toyaudio:train`` / ``toyaudio:test`` and ``toyvideo:train`` /
    ``toyvideo:test`` (toy audio and video prompts with their specs), or a ``.txt``/``.jsonl`` file (every other JSONL field of a prompt is kept in its metadata, e.g. an
    editing family's ``image``)."""
    if source.startswith(TOY_EDIT_PREFIX):
        return toy_edit_dataset(source[len(TOY_EDIT_PREFIX):], source)
    if source.startswith(TOY_AUDIO_PREFIX):
        from rewards.toyaudio.prompts import split as audio_split

        specs = audio_split(source[len(TOY_AUDIO_PREFIX):])
        return PromptDataset([s.prompt for s in specs], [{"spec": s} for s in specs], source)
    if source.startswith(TOY_VIDEO_PREFIX):
        from rewards.toyvideo.prompts import split as video_split

        specs = video_split(source[len(TOY_VIDEO_PREFIX):])
        return PromptDataset([s.prompt for s in specs], [{"spec": s} for s in specs], source)
    if source.startswith(TOY_PREFIX):
        return _from_records([(spec, {}) for spec in split(source[len(TOY_PREFIX):])], source)
    path = Path(source).expanduser()
    return _from_records(load_prompt_records(path), str(path))


def prompt_family(metadata: dict) -> str | None:
    """The evaluation family of a prompt (a toy spec's GenEval family, a toy edit's edit family, a toy audio or
    video prompt's family), or None."""
    from rewards.toyaudio.world import AudioSpec
    from rewards.toyedit.world import EditSpec
    from rewards.toyvideo.world import VideoSpec

    spec = metadata.get("spec")
    return spec.family if isinstance(spec, PromptSpec | EditSpec | AudioSpec | VideoSpec) else None
