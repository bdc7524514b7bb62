import json

import pytest

from genrl.toy.tokenizer import MODEL_MAX_LENGTH, build_toy_tokenizer
from rewards.toyworld.prompts import (
    HELD_OUT_COLOR_SHAPES,
    HELD_OUT_SHAPE_PAIRS,
    all_specs,
    is_held_out,
    load_prompt_file,
    pretraining_specs,
    spec_from_prompt,
    split,
)
from rewards.toyworld.world import FAMILIES, ObjectSpec, PromptSpec, vocabulary


def test_prompts_read_like_geneval():
    assert PromptSpec("counting", (ObjectSpec("cross", 3),)).prompt == "a photo of three crosses"
    assert PromptSpec("position", (ObjectSpec("circle"), ObjectSpec("square")), "left of").prompt == \
        "a photo of a circle left of a square"
    assert PromptSpec("color_attr", (ObjectSpec("circle", 1, "red"), ObjectSpec("square", 1, "blue"))).prompt == \
        "a photo of a red circle and a blue square"


def test_spec_round_trips_through_json():
    for specs in all_specs().values():
        for s in specs:
            assert PromptSpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s
            assert spec_from_prompt(s.prompt.upper()) == s


def test_bad_specs_name_the_culprit():
    with pytest.raises(ValueError, match="hexagon"):
        ObjectSpec("hexagon")
    with pytest.raises(ValueError, match="teal"):
        ObjectSpec("circle", 1, "teal")
    with pytest.raises(KeyError, match="a photo of a dog"):
        spec_from_prompt("a photo of a dog")


def test_splits_hold_out_prompts_from_rl_and_combinations_in_test_ood():
    train, test, ood = split("train"), split("test"), split("test_ood")
    assert {s.family for s in test} == {s.family for s in ood} == set(FAMILIES) == {s.family for s in train}
    rl_prompts = {s.prompt for s in train if s.family != "single_object"}
    for s in train:
        assert not is_held_out(s)
        for o in s.objects:
            assert (o.color, o.shape) not in HELD_OUT_COLOR_SHAPES
        if len(s.objects) == 2:
            assert frozenset(o.shape for o in s.objects) not in HELD_OUT_SHAPE_PAIRS
    for s in ood:
        assert s.family == "single_object" or (is_held_out(s) and s.prompt not in rl_prompts)
    for s in test:
        assert s.family == "single_object" or (not is_held_out(s) and s.prompt not in rl_prompts)
    # every attribute a held-out prompt names is trained on in the same family
    def attributes(specs):
        return {(s.family, kind, value) for s in specs for o in s.objects
                for kind, value in (("shape", o.shape), ("color", o.color), ("count", o.count))} | \
               {(s.family, "relation", s.relation) for s in specs}
    assert attributes(test) <= attributes(train)
    # the main test split is a fixed third of each family's in-distribution prompts (GenEval's 6 families)
    for family in FAMILIES[1:]:
        seen = [s for s in all_specs()[family] if not is_held_out(s)]
        n = sum(s.family == family for s in test)
        assert n == min(16, round(len(seen) / 3)), family
    assert split("test") == test and split("test_ood") == ood  # fixed
    # pretraining sees every prompt, held out or not
    assert set(pretraining_specs()) == {s for specs in all_specs().values() for s in specs} >= set(test) | set(ood)
    with pytest.raises(ValueError, match="test_ood"):
        split("validation")


def test_prompt_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("a photo of a circle\n\n a photo of a square \n")
    assert load_prompt_file(txt) == ["a photo of a circle", "a photo of a square"]
    jsonl = tmp_path / "p.jsonl"
    spec = split("test")[5]
    jsonl.write_text(json.dumps(spec.to_dict()) + "\n" + json.dumps({"prompt": "free text"}) + "\n")
    assert load_prompt_file(jsonl) == [spec, "free text"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(ValueError, match="empty.txt contains no prompts"):
        load_prompt_file(empty)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_prompt_file(tmp_path / "missing.txt")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_prompt_file(bad)


def test_tokenizer_has_one_token_per_toy_word(tmp_path):
    tok = build_toy_tokenizer()
    for word in vocabulary():
        assert len(tok.tokenize(word)) == 1, word
    longest = max((s.prompt for specs in all_specs().values() for s in specs), key=lambda p: len(p.split()))
    assert len(tok(longest).input_ids) <= MODEL_MAX_LENGTH
    assert len(tok.tokenize("a photo of a dog")) > 4  # out-of-vocabulary words still tokenize, by characters
    tok.save_pretrained(tmp_path)
    from transformers import CLIPTokenizer

    again = CLIPTokenizer.from_pretrained(tmp_path)
    assert again(longest).input_ids == tok(longest).input_ids


def test_toy_clip_loads_with_open_clip_and_matches_registered_architecture():
    import open_clip

    from genrl.toy.clip import TOY_CLIP_DIR, load_toy_clip, register_toy_clip_config

    model, _, tokenizer = load_toy_clip()
    fresh = open_clip.create_model(register_toy_clip_config())
    assert set(fresh.state_dict()) == set(model.state_dict())
    assert tokenizer(["a photo of a red circle"]).shape == (1, MODEL_MAX_LENGTH)
    size = sum(p.stat().st_size for p in TOY_CLIP_DIR.rglob("*") if p.is_file())
    assert size < 5 * 2**20
