"""``weakspot demo``: the story end to end on a built-in planted-shortcut dataset, no downloads.

Today it runs the layers that exist: generate the shortcut images, fine-tune EfficientNet-Lite0 from the
offline ImageNet weights, and show which segment the occlusion explainer blames. Attacks and the
adversarial loop join as they land.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from weakspot.explainers import create_explainer
from weakspot.models import load_model
from weakspot.shortcut import CUE_GROUP, make_shortcut_dataset
from weakspot.training import TrainConfig, evaluate_accuracy, train_classifier

console = Console()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=384, help="training images to generate (default 384)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.set_defaults(handler=run)


def _group_accuracy(correct: torch.Tensor, labels: torch.Tensor, cues: list[str], class_names: list[str]) -> dict[str, float]:
    result = {}
    for label_index, name in enumerate(class_names):
        for cue in sorted(set(cues)):
            members = (labels == label_index) & torch.tensor([value == cue for value in cues])
            if members.any():
                result[f"{name} / {cue}"] = float(correct[members].float().mean())
    return result


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    train, _ = make_shortcut_dataset(args.images, args.size, cue_rate=0.95, signal=1.0, seed=args.seed)
    test, boxes = make_shortcut_dataset(max(64, args.images // 3), args.size, cue_rate=0.5, signal=1.0, seed=args.seed + 100)
    console.print(f"[bold]weakspot demo[/]: {len(train)} training images with a button on 95% of class "
                  f"'{train.class_names[1]}' and 5% of '{train.class_names[0]}'; test images 50/50.")
    classifier = load_model("efficientnet_lite0", weights="imagenet", class_names=train.class_names, device=args.device)
    losses = train_classifier(classifier, train.images, train.labels, TrainConfig(epochs=args.epochs, seed=args.seed))
    predicted, _ = classifier.predict(test.images)
    correct = predicted == test.labels
    table = Table(title="ERM fine-tuning: test accuracy per group (label / cue)")
    table.add_column("group")
    table.add_column("accuracy", justify="right")
    for group, accuracy in _group_accuracy(correct, test.labels, test.groups[CUE_GROUP], test.class_names).items():
        table.add_row(group, f"{accuracy:.1%}")
    table.add_row("all", f"{evaluate_accuracy(classifier, test.images, test.labels):.1%}")
    console.print(table)
    with_button = torch.nonzero(boxes[:, 0] >= 0).flatten()[:8]
    attribution = create_explainer("occlusion", classifier, n_segments=40)(test.images[with_button])
    top = attribution.top_segments(1).squeeze(1)
    hits = 0
    for row, image_index in enumerate(with_button.tolist()):
        y0, x0, y1, x1 = boxes[image_index].tolist()
        region = attribution.segments[row, max(y0, 0):y1, max(x0, 0):x1]
        hits += int(bool((region == top[row]).any()))
    console.print(f"occlusion explainer: top segment touches the button in {hits}/{len(with_button)} images; "
                  f"final training loss {losses[-1]:.3f}; {time.perf_counter() - started:.0f} s")
    return 0
