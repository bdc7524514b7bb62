"""What the toy audio pipeline's VAE keeps of a clip: the ceiling it puts on every generated clip.

    python bench/toy_audio_vae.py                                   # the shipped toy audio pipeline
    python bench/toy_audio_vae.py --model /tmp/audio/stable-audio-toy --clips-per-prompt 8 --json vae.json

1. **Round trips**: held-out renders (``--split``, ``--clips-per-prompt`` each) encoded to the posterior mean and
   decoded; the verifier's strict accuracy per family (renders themselves pass 100 %).
2. **Pitch map**: one note of every pitched timbre at every pitch the world uses (harmonics 4-31 of its 40 Hz
   grid), 0.5 s at 0.6 of full scale; the pitch the verifier finds in its round trip, and the share returned at its own pitch.
3. **Pitch in the latents**: a ridge classifier (numpy, closed form) from the encoder's latents of those notes
   (per channel: the mean over the note's frames and the magnitude spectrum over time) to the pitch, trained
   on three render seeds per note and tested on a fourth, and from the channel means alone; and the latents' lag-1
   autocorrelation over the note. High accuracy here with a poor pitch map says the encoder keeps the pitch and
   the decoder loses it; a probe that needs the spectrum over time says the pitch lives in how the latents change.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

import numpy as np

NOTE_START, NOTE_SAMPLES, NOTE_GAIN = 1000, 4000, 0.6
PROBE_SEEDS = 4  # render seeds per (timbre, pitch); the last is held out from the probe's fit
PROBE_RIDGE = 10.0


def note_clip(timbre: str, harmonic: int, seed: int) -> np.ndarray:
    """A clip with one note of ``timbre`` at ``harmonic`` of the pitch grid (its render's envelope), silent
    elsewhere."""
    from rewards.toyaudio.render import render_event
    from rewards.toyaudio.world import NUM_SAMPLES, EventSpec

    clip = np.zeros(NUM_SAMPLES, np.float32)
    note = render_event(EventSpec(timbre), harmonic, NOTE_SAMPLES, np.random.default_rng(seed))
    clip[NOTE_START:NOTE_START + NOTE_SAMPLES] = NOTE_GAIN * note / np.abs(note).max()
    return clip


def ridge_probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                         ridge: float = PROBE_RIDGE) -> float:
    """Held-out accuracy of a one-vs-rest ridge classifier on standardised features (closed form)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    classes = np.unique(train_y)
    onehot = (train_y[:, None] == classes[None]).astype(np.float64)
    weights = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ onehot)
    return float(np.mean(classes[np.argmax(b @ weights, axis=1)] == test_y))


def note_frames(latents: np.ndarray, hop: int) -> np.ndarray:
    """The latent frames ``(clips, channels, frames)`` that lie inside the note of :func:`note_clip`."""
    return latents[:, :, NOTE_START // hop:(NOTE_START + NOTE_SAMPLES) // hop]


def latent_features(note: np.ndarray) -> np.ndarray:
    """Per clip: each channel's mean over the note's latent frames and its magnitude spectrum over time."""
    return np.concatenate([note.mean(-1), np.abs(np.fft.rfft(note, axis=-1)).reshape(len(note), -1)], axis=1)


def lag_one_autocorrelation(note: np.ndarray) -> float:
    """The mean over clips and channels of the correlation of each latent frame with the next: near 1 for a
    latent that holds still over a note, near 0 for one that changes every frame."""
    centred = note - note.mean(-1, keepdims=True)
    products = (centred[..., :-1] * centred[..., 1:]).sum(-1)
    norms = np.sqrt((centred[..., :-1] ** 2).sum(-1) * (centred[..., 1:] ** 2).sum(-1)) + 1e-12
    return float(np.mean(products / norms))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy_audio", help="toy audio pipeline directory or alias")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--clips-per-prompt", type=int, default=4)
    parser.add_argument("--max-prompts", type=int, default=0, help="the first N prompts of the split (0: all)")
    parser.add_argument("--timbres", nargs="+", default=None, help="the pitch map's timbres (default: every pitched)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.clips_per_prompt < 1:
        parser.error(f"--clips-per-prompt={args.clips_per_prompt} must be >= 1")
    from rewards.toyaudio.world import PITCHED

    unknown = sorted(set(args.timbres or ()) - set(PITCHED))
    if unknown:
        parser.error(f"--timbres: {', '.join(unknown)} is not a pitched timbre of the world ({', '.join(PITCHED)})")

    import torch

    from genrl.models.loading import load_pipeline
    from rewards.toyaudio import split
    from rewards.toyaudio.render import render
    from rewards.toyaudio.verifier import detect, verify
    from rewards.toyaudio.world import REGISTERS

    torch.set_num_threads(args.threads)
    vae = load_pipeline(args.model).vae.eval()

    @torch.no_grad()
    def encode(clips: np.ndarray) -> torch.Tensor:
        return torch.cat([vae.encode(torch.from_numpy(c)[:, None]).latent_dist.mean for c in np.array_split(
            clips, max(1, len(clips) // 32))])

    @torch.no_grad()
    def decode(latents: torch.Tensor) -> np.ndarray:
        return torch.cat([vae.decode(z[None]).sample for z in latents])[:, 0].numpy()

    def round_trip(clips: np.ndarray) -> np.ndarray:
        return decode(encode(clips))

    by_family: dict[str, list[float]] = defaultdict(list)
    prompts = split(args.split)
    for i, spec in enumerate(prompts[:args.max_prompts] if args.max_prompts else prompts):
        clips = np.stack([render(spec, 90_000 + 97 * i + k) for k in range(args.clips_per_prompt)])
        by_family[spec.family] += [verify(c, spec).strict for c in round_trip(clips)]
    strict = {f: float(np.mean(v)) for f, v in sorted(by_family.items())}
    every = [v for vs in by_family.values() for v in vs]
    print(f"round trips ({args.split}, {len(every)} clips): strict {np.mean(every):.3f}  "
          + "  ".join(f"{f} {s:.2f}" for f, s in strict.items()))

    pitches = [h for span in REGISTERS.values() for h in span]
    pitch_map, probe = {}, {}
    for timbre in args.timbres or PITCHED:
        clips = np.stack([note_clip(timbre, m, 1_000 * m + s) for m in pitches for s in range(PROBE_SEEDS)])
        first_seed = np.arange(len(clips)) % PROBE_SEEDS == 0
        latents = encode(clips)  # every seed for the probe; the first seed's are decoded for the pitch map
        found = [next(iter(e.pitches), None) if (e := next(iter(detect(c)), None)) else None
                 for c in decode(latents[torch.from_numpy(first_seed)])]
        pitch_map[timbre] = {"own_pitch": float(np.mean([f == m for f, m in zip(found, pitches, strict=True)])),
                             "returned": dict(zip(map(str, pitches), found, strict=True))}
        note = note_frames(latents.numpy(), vae.hop_length)
        features = latent_features(note)
        labels = np.repeat(pitches, PROBE_SEEDS)
        held = np.arange(len(clips)) % PROBE_SEEDS == PROBE_SEEDS - 1
        probe[timbre] = {name: ridge_probe_accuracy(x[~held], labels[~held], x[held], labels[held])
                         for name, x in (("all", features), ("channel_means", features[:, :note.shape[1]]))}
        probe[timbre]["lag_one_autocorrelation"] = lag_one_autocorrelation(note)
        distinct = sorted({f for f in found if f is not None})
        print(f"{timbre:8s} notes returned at their own pitch {pitch_map[timbre]['own_pitch']:.2f} "
              f"({len(distinct)} distinct pitches come back: {distinct}); latent pitch probe {probe[timbre]['all']:.2f} "
              f"(channel means alone {probe[timbre]['channel_means']:.2f}; lag-1 autocorrelation of the latents "
              f"{probe[timbre]['lag_one_autocorrelation']:.2f})")

    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"model": args.model, "split": args.split, "round_trip_strict": float(np.mean(every)),
                       "round_trip_strict_by_family": strict, "pitch_map": pitch_map, "latent_pitch_probe": probe},
                      fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
