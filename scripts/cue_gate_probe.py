"""Calibrate the loop's dependence test (``--cue-gate``): run one loop round's attack on a trained model's
training images with the gate off, then print per class the lead that ``confirm_cue_classes`` gives its
confirmed cues (how much more often they flip correctly classified images of another class than a
same-size region of the same donor elsewhere).

    .venv/bin/python scripts/cue_gate_probe.py --data /tmp/shortcut96 --checkpoint /tmp/k/button/s0/erm/last.pt \
        --max-images 3000 --seed 0

Run it on a model trained with a planted cue and on one trained without (``--rate 0.5``): the gate belongs
between the two (README, "The adversarial augmentation loop").

With ``--zones SHARE:GROWTH[:BASE],...`` it also measures the cue zones the loop's spread would use
(``cue_zone`` by ``ZoneRule(SHARE, GROWTH, BASE)``, BASE "peak" unless given, or "cues" for a share of the
class's cues): per class, the share of the planted cue's holders (the ``cue`` column) still predicted
their class once the zone is filled with ``median``, and the share of the other class's images without
the cue that the zone pasted from a random confirmed donor flips.

With ``--conflicts`` it compares the training images the loop would add as cue-conflicting
(``cue_conflicts``, over the whole training split) with the planted ones (the cue class's images without
the cue, the other class's with it): how many it finds, and their precision and recall.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from weakspot.augment.adversarial import (DEFAULT_ATTACKS, DEFAULT_BUDGET, DEFAULT_GATE, CueBank, collect_adversarial,
                                         ZoneRule, confirm_cue_classes, cue_conflicts, cue_zone)
from weakspot.data import load_dataset
from weakspot.fills import apply_masks, fill_images
from weakspot.models import Classifier, load_checkpoint


def print_zone_effects(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, cued: torch.Tensor,
                       bank: CueBank, zones: list[ZoneRule], class_names: list[str]) -> None:
    """Per class of the bank and zone rule: erased, how many cue holders keep their class;
    pasted, how many other-class images without the cue turn to it."""
    generator = torch.Generator().manual_seed(3)
    for label in bank.labels.unique().tolist():
        holders, others = cued & (labels == label), ~cued & (labels != label)
        donors = bank.images[bank.labels == label]
        if not holders.any() or not others.any():
            continue
        for rule in zones:
            zone = cue_zone(bank.masks[bank.labels == label], rule)
            erased = apply_masks(images[holders], zone.expand(int(holders.sum()), -1, -1),
                                 fill_images(images[holders], "median"))
            sources = donors[torch.randint(len(donors), (int(others.sum()),), generator=generator)]
            pasted = apply_masks(images[others], zone.expand(int(others.sum()), -1, -1), sources)
            kept = float((classifier.predict(erased)[0].cpu() == label).float().mean())
            flipped = float((classifier.predict(pasted)[0].cpu() == label).float().mean())
            print(f"{class_names[label]} zone share {rule.share} of the {rule.base} growth {rule.growth}: "
                  f"{float(zone.float().mean()):.3f} of "
                  f"the image; erased, {kept:.2f} of {int(holders.sum())} holders keep their class; pasted, "
                  f"{flipped:.2f} of {int(others.sum())} others turn to it")


def print_conflicts(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, cued: torch.Tensor,
                    bank: CueBank) -> None:
    """How well ``cue_conflicts`` finds the planted cue-conflicting images (the cue class: the class most
    of whose images hold the cue)."""
    cue_class = int(torch.argmax(torch.stack([cued[labels == label].float().mean()
                                              for label in range(int(labels.max()) + 1)])))
    truth = (labels == cue_class) != cued
    found, drops = cue_conflicts(classifier, images, labels, bank)
    print("median drop per confirmed class: " + ", ".join(f"{label}: {drop:.3f}" for label, drop in drops.items()))
    hits = int((found & truth).sum())
    print(f"conflicts: {int(found.sum())} found of {len(labels)} training images, {int(truth.sum())} planted; "
          f"precision {hits / max(1, int(found.sum())):.2f}, recall {hits / max(1, int(truth.sum())):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a `weakspot data shortcut` folder")
    parser.add_argument("--checkpoint", required=True, help="a model trained on its train split")
    parser.add_argument("--label", default="gender")
    parser.add_argument("--size", type=int, default=96, help="image side the model was trained at")
    parser.add_argument("--images", type=int, default=300, help="training images attacked (default 300)")
    parser.add_argument("--max-images", type=int, default=None, help="the subset the model was trained on")
    parser.add_argument("--seed", type=int, default=0, help="the training run's seed (it draws the subset)")
    parser.add_argument("--zones", default=None, metavar="SHARE:GROWTH[:BASE],...",
                        help="also measure these cue zones on the planted cue's holders (a `data shortcut` folder)")
    parser.add_argument("--conflicts", action="store_true",
                        help="also compare the loop's cue-conflicting training images with the planted ones")
    args = parser.parse_args()
    torch.set_num_threads(1)
    classifier = load_checkpoint(args.checkpoint)
    imageset = load_dataset(args.data, size=args.size, label=args.label,
                            groups=["split", *(["cue"] if args.zones or args.conflicts else [])],
                            max_images=args.max_images,
                            seed=args.seed)
    train = np.flatnonzero(np.array(imageset.groups["split"]) == "train")
    rows = torch.from_numpy(np.sort(np.random.default_rng(0).choice(train, size=min(args.images, len(train)),
                                                                    replace=False)))
    images, labels = imageset.images[rows], imageset.labels[rows]
    harvest = collect_adversarial(classifier, images, labels, DEFAULT_ATTACKS, DEFAULT_BUDGET, transplant=True,
                                  cues_only=True, seed=1)
    lead = confirm_cue_classes(classifier, images, labels, harvest.cues, torch.Generator().manual_seed(2))
    counts = torch.bincount(harvest.cues.labels, minlength=len(imageset.class_names)).tolist()
    for index, name in enumerate(imageset.class_names):
        shown = f"{lead[index]:+.3f}" if index in lead else "-"
        print(f"{name}: {counts[index]} confirmed cues, lead {shown}")
    if args.zones:
        cued = torch.from_numpy(np.array(imageset.groups["cue"])[rows.numpy()] != "none")
        zones = [ZoneRule(float(share), float(growth), *base)
                 for share, growth, *base in (item.split(":") for item in args.zones.split(","))]
        print_zone_effects(classifier, images, labels, cued, harvest.cues, zones, imageset.class_names)
    if args.conflicts:
        confirmed = harvest.cues.select(torch.isin(harvest.cues.labels, torch.tensor(
            [label for label, value in lead.items() if value >= DEFAULT_GATE], dtype=torch.long)))
        cued = torch.from_numpy(np.array(imageset.groups["cue"])[train] != "none")
        rows = torch.from_numpy(train)
        print_conflicts(classifier, imageset.images[rows], imageset.labels[rows], cued, confirmed)


if __name__ == "__main__":
    main()
