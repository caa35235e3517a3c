"""The README's before/after figure: a test image of the first model's worst group that it gets wrong and the second
gets right, explained for its true class by both (e.g. the shortcut benchmark's ERM and loop runs), side by side.

    .venv/bin/python scripts/before_after_figure.py --data /tmp/cues/button_s0 --max-images 3000 --seed 0 \
        --before /tmp/after/button_s0/erm/last.pt --after /tmp/after/button_s0/adversarial/balanced.pt \
        --nth 1 --out docs/before_after.png
"""

from __future__ import annotations

import argparse

import torch

from weakspot.arguments import split_sets
from weakspot.data import load_dataset
from weakspot.explainers import create_explainer
from weakspot.explainers.figures import comparison_figure, save_figure
from weakspot.models import load_checkpoint
from weakspot.training.evaluation import evaluate_groups, group_keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a `weakspot data shortcut` folder")
    parser.add_argument("--label", default="gender")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="the runs' seed (it draws the subset)")
    parser.add_argument("--before", required=True, help="checkpoint of the model before the fix")
    parser.add_argument("--after", required=True, help="checkpoint of the model after it")
    parser.add_argument("--method", default="occlusion")
    parser.add_argument("--nth", type=int, default=0, help="which of those images (default the first)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    imageset = load_dataset(args.data, size=args.size, label=args.label, groups=["split", "cue"],
                            max_images=args.max_images, seed=args.seed)
    test = split_sets(imageset, args.seed)["test"]
    attributes = [args.label, "cue"]
    models = {"before": load_checkpoint(args.before), "after": load_checkpoint(args.after)}
    worst = evaluate_groups(models["before"], test, attributes, args.label)["worst_group"]
    wanted = tuple(worst[attribute] for attribute in attributes)
    right = {name: model.predict(test.images)[0].cpu() == test.labels for name, model in models.items()}
    index = [i for i, key in enumerate(group_keys(test, attributes, args.label))
             if key == wanted and not right["before"][i] and right["after"][i]][args.nth]
    image, label = test.images[index:index + 1], test.labels[index:index + 1]
    attributions = {name: create_explainer(args.method, model)(image, target=label) for name, model in models.items()}
    print(save_figure(comparison_figure(image[0], attributions, 0, test.class_names), args.out))


if __name__ == "__main__":
    main()
