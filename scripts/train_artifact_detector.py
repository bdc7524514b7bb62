"""Train the lightweight artifact detector (a token-wise MLP on frozen image features); report accuracy/F1.

    python scripts/train_artifact_detector.py --data DIR --backbone facebook/dinov2-base --out my-detector
    python scripts/train_artifact_detector.py --toy      # rebuilds the shipped toy detector

``--data`` holds ``clean/`` and ``artifact/`` subfolders of images; a seeded ``--val-fraction`` of
them is held out for the reported metrics. ``--toy`` trains on renderer scenes of the training
prompts with synthetic artifacts (genrl.toy.artifacts) and validates on scenes of the held-out
test prompts. The result loads as ``build_reward("artifact_classifier", detector=OUT)``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from rewards.artifacts import (
    binary_metrics,
    detector_features,
    load_labelled_folder,
    save_detector,
    toy_detector_dir,
    train_artifact_head,
)
from rewards.backbones import build_backbone


def toy_data(n_train: int, n_val: int, seed: int):
    from genrl.toy.artifacts import artifact_dataset

    def convert(images):
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0

    x_tr, y_tr, _ = artifact_dataset(n_train, random.Random(seed), "train")
    x_va, y_va, kinds = artifact_dataset(n_val, random.Random(seed + 1), "test")
    return convert(x_tr), torch.from_numpy(y_tr), convert(x_va), torch.from_numpy(y_va), kinds


def folder_data(root: Path, val_fraction: float, seed: int, image_size: int | None):
    x, y = load_labelled_folder(root, image_size)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(val_fraction * len(y)))
    if n_val >= len(y):
        raise ValueError(f"{root}: {len(y)} images leave nothing to train on with val fraction {val_fraction}")
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val], None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="folder with clean/ and artifact/ subfolders")
    source.add_argument("--toy", action="store_true", help="renderer scenes with synthetic artifacts")
    parser.add_argument("--backbone", default=None, help="DINOv2 id/dir, open_clip model or 'toy' (default: toy "
                        "for --toy, facebook/dinov2-base otherwise)")
    parser.add_argument("--out", type=Path, default=None, help="detector directory (default for --toy: the shipped one)")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--image-size", type=int, default=None, help="resize folder images to this square size")
    parser.add_argument("--toy-train", type=int, default=8000, help="toy training images (half with artifacts)")
    parser.add_argument("--toy-val", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    backbone_name = args.backbone or ("toy" if args.toy else "facebook/dinov2-base")
    out = args.out or (toy_detector_dir() if args.toy else None)
    if out is None:
        parser.error("--out is required with --data")
    torch.manual_seed(args.seed)
    start = time.time()
    if args.toy:
        x_tr, y_tr, x_va, y_va, kinds = toy_data(args.toy_train, args.toy_val, args.seed)
    else:
        x_tr, y_tr, x_va, y_va, kinds = folder_data(args.data, args.val_fraction, args.seed, args.image_size)
    backbone = build_backbone(backbone_name)
    f_tr, f_va = detector_features(backbone, x_tr), detector_features(backbone, x_va)
    head = train_artifact_head(f_tr, y_tr, hidden=args.hidden, steps=args.steps, lr=args.lr, seed=args.seed)
    with torch.no_grad():
        predicted = torch.sigmoid(head(f_va)) > 0.5
        train_predicted = torch.sigmoid(head(f_tr)) > 0.5
    metrics = {"validation": binary_metrics(predicted, y_va), "train": binary_metrics(train_predicted, y_tr)}
    if kinds is not None:  # accuracy per artifact kind (and on clean images) of the toy validation set
        metrics["validation_by_kind"] = {
            kind: (predicted[[i for i, k in enumerate(kinds) if k == kind]] == (kind != "clean")).float().mean().item()
            for kind in sorted(set(kinds))}
    metrics["data"] = "toy renderer + genrl.toy.artifacts" if args.toy else str(args.data)
    metrics["train_seconds"] = round(time.time() - start, 1)
    save_detector(out, backbone_name, head, metrics)
    print(json.dumps(metrics, indent=2))
    print(f"detector: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
