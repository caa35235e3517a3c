"""Fine-tune EfficientNet-Lite0 or -Lite1 (offline ImageNet weights) on UTKFace gender and report test
accuracy and wall time: the issue-7 target (Lite0, 96 px) is >= 85% test accuracy in under 20 minutes on
2 CPU cores.

    .venv/bin/python scripts/finetune_utkface.py --out /tmp/utkface_run --json utkface_finetune.json

It runs ``weakspot train`` (seeded stratified 70/15/15 split, augmentation, warm-up + cosine, early
stopping) and records the machine's load average before and after, because the cores may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from weakspot.cli import main as weakspot_main
from weakspot.fileio import atomic_write_json

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "utkface"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", required=True, help="run folder (checkpoints, log, results.json)")
    parser.add_argument("--json", default=None, help="write the summary here too")
    parser.add_argument("--model", default="efficientnet_lite0",
                        help="efficientnet_lite0 or efficientnet_lite1 (the offline ImageNet weights)")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on shared cores)")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    command = ["train", "--data", args.data, "--label", "gender", "--groups", "race", "--size", str(args.size),
               "--model", args.model, "--weights", "imagenet", "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--label-smoothing", "0.1",
               "--threads", str(args.threads), "--seed", str(args.seed), "--out", args.out, "--no-progress"]
    if args.max_images:
        command += ["--max-images", str(args.max_images)]
    load_before = os.getloadavg()
    started = time.perf_counter()
    code = weakspot_main(command)
    seconds = time.perf_counter() - started
    if code != 0:
        return code
    results = json.loads((Path(args.out) / "results.json").read_text())
    summary = {"command": "weakspot " + " ".join(command), "test_accuracy": results["test"]["accuracy"],
               "test_images": results["test"]["n"], "val_accuracy": results["val_accuracy"],
               "epochs_run": results["epochs_run"], "best_epoch": results["best_epoch"],
               "wall_seconds": seconds, "train_seconds": results["train_seconds"], "cpu_count": os.cpu_count(),
               "load_average_before": load_before, "load_average_after": os.getloadavg(),
               "target_met": results["test"]["accuracy"] >= 0.85 and seconds < 20 * 60}
    print(json.dumps(summary, indent=2))
    if args.json:
        atomic_write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
