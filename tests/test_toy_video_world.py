"""The toy video world: every family's renders pass the tracking verifier, the same clip fails another prompt of
its family, reversed / frozen / re-timed clips fail what they no longer show, the splits hold out prompts from RL
only, and bad input is named."""

import collections
import random

import numpy as np
import pytest
import torch

from genrl.data import load_prompts, prompt_family
from rewards import Media, build_reward
from rewards.toyvideo import (
    NUM_FRAMES,
    VIDEO_FAMILIES,
    MoverSpec,
    VideoSpec,
    all_specs,
    render_clip,
    spec_from_prompt,
    split,
    verify_clip,
    video_vocabulary,
)
from rewards.toyvideo.prompts import _attributes, pretraining_specs
from rewards.toyvideo.render import render_tracks
from rewards.toyworld.world import SHAPES


def test_renders_of_every_family_pass_and_fail_another_prompt_of_their_family():
    rng = random.Random(0)
    passed, mismatched = collections.defaultdict(list), collections.defaultdict(list)
    for family, specs in all_specs().items():
        for _ in range(40):
            spec = rng.choice(specs)
            clip, tracks = render_clip(spec, rng)
            assert clip.shape == (NUM_FRAMES, 32, 32, 3) and clip.dtype == np.uint8
            assert len(tracks) == spec.num_objects
            passed[family].append(verify_clip(clip, spec).strict)
            other = rng.choice([s for s in specs if s != spec])
            mismatched[family].append(verify_clip(clip, other).strict)
    assert all(np.mean(v) >= 0.99 for v in passed.values()), dict(passed)
    assert all(np.mean(v) <= 0.1 for v in mismatched.values()), {k: np.mean(v) for k, v in mismatched.items()}


def test_a_reversed_frozen_or_retimed_clip_fails_what_it_no_longer_shows():
    rng = random.Random(1)
    red_circle = MoverSpec("circle", "red")
    right = VideoSpec("direction", (red_circle,), direction="right")
    clip, tracks = render_clip(right, rng)
    assert verify_clip(clip[::-1], right).reason == "not: moving right"
    assert verify_clip(clip[::-1], VideoSpec("direction", (red_circle,), direction="left")).strict == 1.0
    frozen = np.repeat(clip[:1], NUM_FRAMES, axis=0)
    assert verify_clip(frozen, right).strict == 0.0 and verify_clip(frozen, VideoSpec("still", (red_circle,))).strict
    slow = VideoSpec("speed", (red_circle,), direction="right", speed="slowly")
    quick = VideoSpec("speed", (red_circle,), direction="right", speed="quickly")
    slow_clip, _ = render_clip(slow, rng)
    assert verify_clip(slow_clip, slow).strict and verify_clip(slow_clip, quick).reason == "not: moving quickly"
    pair = (MoverSpec("square", "blue"), MoverSpec("triangle", "green"))
    apart = VideoSpec("apart", pair, relation="apart")
    apart_clip, _ = render_clip(apart, rng)
    together = VideoSpec("apart", pair, relation="together")
    assert verify_clip(apart_clip[::-1], together).strict and not verify_clip(apart_clip[::-1], apart).strict
    # an object that vanishes for two frames is not there "in every frame"; for one frame it still is
    gone = render_tracks(tracks)
    gone[3:5] = 255
    assert verify_clip(gone, right).reason == "not: 1 red circle in every frame"
    gone[4] = clip[4]
    assert verify_clip(gone, right).strict == 1.0


def test_splits_hold_out_prompts_from_rl_only_and_cover_what_they_name():
    train, test = split("train"), split("test")
    assert len(test) == 8 * len(VIDEO_FAMILIES) and not set(train) & set(test)
    assert set(train) | set(test) == set(pretraining_specs())  # pretraining sees every prompt
    assert collections.Counter(s.family for s in test) == {f: 8 for f in VIDEO_FAMILIES}
    seen = set().union(*map(_attributes, train))
    assert all(_attributes(s) <= seen for s in test)
    assert split("test") == split("test")  # fixed
    words = set(video_vocabulary())
    assert all(set(s.prompt.split()) <= words for s in pretraining_specs())
    assert spec_from_prompt(test[0].prompt) == test[0]
    data = load_prompts("toyvideo:test")
    assert data.prompts == [s.prompt for s in test] and prompt_family(data.metadata[0]) == test[0].family


def test_the_reward_scores_video_media_and_names_bad_input():
    rng = random.Random(2)
    specs = list(split("test")[:4])
    clips = np.stack([render_clip(s, rng)[0] for s in specs])
    frames = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float() / 255  # (N, F, 3, H, W)
    media = Media(frames, "video", fps=8)
    strict = build_reward("toy_video_verifier")
    out = strict(media, [s.prompt for s in specs], [{"spec": s.to_dict()} for s in specs])
    assert out.scores.tolist() == [1.0] * 4
    shuffled = strict(media, [s.prompt for s in specs[1:] + specs[:1]], [{} for _ in specs])  # spec from the text
    assert shuffled.scores.sum() == 0
    partial = build_reward("toy_video_verifier", mode="partial")(media, [s.prompt for s in specs[1:] + specs[:1]],
                                                                  [{} for _ in specs])
    assert ((partial.scores > 0) & (partial.scores < 1)).all()
    with pytest.raises(ValueError, match="scores clips of 9 frames of 32 x 32; got 5 frames"):
        strict(Media(frames[:, :5], "video", fps=8), [s.prompt for s in specs], [{}] * 4)
    with pytest.raises(ValueError, match="scores video, not image"):
        strict(Media(frames[:, 0], "image"), [s.prompt for s in specs], [{}] * 4)
    with pytest.raises(KeyError, match="'a video of a dog' is not a toy video prompt"):
        strict(media, ["a video of a dog"] * 4, [{}] * 4)
    with pytest.raises(ValueError, match="4k \\+ 1 frames"):
        verify_clip(clips[0][:8], specs[0])


def test_specs_refuse_what_their_family_cannot_say():
    m = MoverSpec("circle", "red")
    with pytest.raises(ValueError, match="needs a direction"):
        VideoSpec("direction", (m,))
    with pytest.raises(ValueError, match="belongs to the speed family only"):
        VideoSpec("direction", (m,), direction="left", speed="slowly")
    with pytest.raises(ValueError, match="different shapes and different colours"):
        VideoSpec("apart", (m, MoverSpec("circle", "blue")), relation="apart")
    with pytest.raises(ValueError, match="only the counting family"):
        VideoSpec("direction", (MoverSpec("circle", "red", 2),), direction="left")
    with pytest.raises(ValueError, match="unknown shape"):
        MoverSpec("star", "red")
    assert {o.shape for s in all_specs()["still"] for o in s.objects} == set(SHAPES)
    assert VideoSpec.from_dict(split("test")[0].to_dict()) == split("test")[0]
