"""Calibrate the loop's dependence test (``--cue-gate``): run one round's ``locate`` on a trained model's training
images with the gate off, then print per class its confirmed cues, the lead ``confirm_cue_classes`` gives them
(how much more often they flip correctly classified images of another class than a same-size region of the same
donor elsewhere) and the share of the image its cue zone covers.

    .venv/bin/python scripts/cue_gate_probe.py --data /tmp/shortcut96 --checkpoint /tmp/k/button/s0/erm/last.pt \
        --max-images 3000 --seed 0

Run it on a model trained with a planted cue and on one trained without (``--rate 0.5``): the gate belongs
between the two (docs/loop.md).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from weakspot.augment.adversarial import LoopConfig
from weakspot.augment.adversarial.confirm import confirm_cue_classes
from weakspot.augment.adversarial.locate import locate
from weakspot.data import load_dataset
from weakspot.models import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a `weakspot data shortcut` folder")
    parser.add_argument("--checkpoint", required=True, help="a model trained on its train split")
    parser.add_argument("--label", default="gender")
    parser.add_argument("--size", type=int, default=96, help="image side the model was trained at")
    parser.add_argument("--images", type=int, default=300, help="training images attacked (default 300)")
    parser.add_argument("--max-images", type=int, default=None, help="the subset the model was trained on")
    parser.add_argument("--seed", type=int, default=0, help="the training run's seed (it draws the subset)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    classifier = load_checkpoint(args.checkpoint)
    imageset = load_dataset(args.data, size=args.size, label=args.label, groups=["split"],
                            max_images=args.max_images, seed=args.seed)
    train = np.flatnonzero(np.array(imageset.groups["split"]) == "train")
    rows = torch.from_numpy(np.sort(np.random.default_rng(0).choice(train, size=min(args.images, len(train)),
                                                                    replace=False)))
    images, labels = imageset.images[rows], imageset.labels[rows]
    defaults = LoopConfig()
    harvest = locate(classifier, images, labels, defaults.attacks, defaults.budget, gate=None, seed=1)
    lead = confirm_cue_classes(classifier, images, labels, harvest.cues, torch.Generator().manual_seed(2))
    counts = torch.bincount(harvest.cues.labels, minlength=len(imageset.class_names)).tolist()
    for index, name in enumerate(imageset.class_names):
        shown = f"{lead[index]:+.3f}" if index in lead else "-"
        zone = harvest.cues.zone_of.get(index)
        share = "-" if zone is None else f"{float(zone.float().mean()):.3f}"
        print(f"{name}: {counts[index]} confirmed cues, lead {shown} (gate {defaults.gate}), zone {share} of the image")


if __name__ == "__main__":
    main()
