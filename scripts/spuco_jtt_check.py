"""SpuCo's JTT inference against weakspot's JTT on one benchmark run: both take the error set of the same
identification model (the ERM row's ``last.pt``) on the same training split; prints whether they pick the same
images. JTT's only other part is the retraining, which is weakspot's ``fit`` for every row of the benchmark.

    .venv/bin/python scripts/spuco_jtt_check.py --data /tmp/cues/button_s0 --checkpoint /tmp/w44/button_s0/erm/last.pt \\
        --max-images 3000 --seed 0
"""

from __future__ import annotations

import argparse

import torch
from spuco.group_inference import JTTInference

from weakspot.augment.jtt import Jtt
from weakspot.data import load_dataset
from weakspot.arguments import split_sets
from weakspot.models import load_checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--checkpoint", required=True, help="the identification model (the ERM row's last.pt)")
    parser.add_argument("--label", default="gender")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    imageset = load_dataset(args.data, size=args.size, label=args.label, groups=["split"],
                            max_images=args.max_images, seed=args.seed)
    train = split_sets(imageset, args.seed)["train"]
    identifier = load_checkpoint(args.checkpoint, device="cpu")
    weights, _ = Jtt(upweight=50.0).prepare_retraining(identifier, train.images, train.labels)
    ours = torch.nonzero(weights == 50.0).flatten().tolist()
    predicted, _ = identifier.predict(train.images)
    theirs = sorted(JTTInference(predictions=predicted.tolist(), class_labels=train.labels.tolist()).infer_groups()[(0, 1)])
    print(f"training images {len(train.labels)}; weakspot's error set {len(ours)}, SpuCo's {len(theirs)}; "
          f"identical: {ours == theirs}")
    return 0 if ours == theirs else 1


if __name__ == "__main__":
    raise SystemExit(main())
