"""Time our explainers against lime_image, the shap package's Partition explainer and captum.attr, and
against the floor: the bare ``predict_proba`` time for the same number of model evaluations.

One run, one model (efficientnet_lite0, ImageNet weights, 2-class head), the same images, segments, fills
and evaluation budget for every method. Each method's floor is timed right after it (the machine is shared,
so adjacent timings compare like with like) and every pair is repeated ``--repeats`` times, keeping the
fastest of each: other work on the machine only ever adds time. Prints a rich table and writes JSON
atomically.

    .venv/bin/python scripts/bench_explainers.py --images 3 --size 112 --samples 300 --out bench_explainers.json
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from weakspot.explainers.base import explainer_fill
from weakspot.explainers.gradcam import GradCam
from weakspot.explainers.lime import Lime
from weakspot.explainers.occlusion import Occlusion
from weakspot.explainers.shap import KernelShap, ShapPartition
from weakspot.fileio import atomic_write_json
from weakspot.models import Classifier, load_model
from weakspot.segmentation import slic_segments

UTKFACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "utkface"
CAPTUM_BATCH = 64  # perturbations_per_eval for captum: big enough that predict_proba micro-batches are full


def bench_images(count: int, size: int, seed: int) -> tuple[torch.Tensor, str]:
    """A few UTKFace faces when the shared data is beside the repository, generated scenes otherwise."""
    if (UTKFACE / "labels.csv").is_file():
        from weakspot.data import load_dataset

        faces = load_dataset(UTKFACE, size=size, label="gender", max_images=max(count, 16), seed=seed)
        return faces.images[:count], f"UTKFace ({count} images)"
    from weakspot.shortcut import make_shortcut_dataset

    generated, _ = make_shortcut_dataset(count, size, seed=seed)
    return generated.images, f"generated shortcut scenes ({count} images; {UTKFACE} not found)"


def timed(classifier: Classifier, run: Callable[[], object]) -> tuple[float, int]:
    """Seconds and model evaluations (images through ``predict_proba``/``forward``) of one call."""
    before = classifier.images_evaluated
    started = time.perf_counter()
    run()
    return time.perf_counter() - started, classifier.images_evaluated - before


def floor_seconds(classifier: Classifier, evaluations: int, size: int) -> float:
    """The bare model time for ``evaluations`` images: one ``predict_proba`` on a prepared tensor."""
    images = torch.rand(evaluations, 3, size, size, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    classifier.predict_proba(images)
    return time.perf_counter() - started


def reference_runs(classifier: Classifier, images: torch.Tensor, segments: torch.Tensor, target: torch.Tensor,
                   samples: int) -> dict[str, Callable[[], object]]:
    """The reference libraries, each given our segments, fills and budget."""
    from captum.attr import FeatureAblation, KernelShap as CaptumKernelShap, Lime as CaptumLime
    from lime import lime_image

    def probabilities_numpy(batch: np.ndarray) -> np.ndarray:
        return classifier.predict_proba(torch.from_numpy(batch).permute(0, 3, 1, 2).float()).cpu().numpy()

    def run_lime_image() -> None:
        for row in range(len(images)):
            explainer = lime_image.LimeImageExplainer(random_state=0)
            explainer.explain_instance(images[row].permute(1, 2, 0).double().numpy(), probabilities_numpy,
                                       labels=(int(target[row]),), top_labels=None, num_samples=samples,
                                       batch_size=CAPTUM_BATCH, segmentation_fn=lambda _, r=row: segments[r].numpy(),
                                       random_seed=0)

    mean_fill = explainer_fill(images, segments, "mean")
    feature_mask = segments[:, None].expand(-1, 3, -1, -1)

    def captum(method: type, **kwargs: object) -> Callable[[], None]:
        def run() -> None:
            explainer = method(classifier.predict_proba)
            for row in range(len(images)):
                explainer.attribute(images[row:row + 1], target=int(target[row]), baselines=mean_fill[row:row + 1],
                                    feature_mask=feature_mask[row:row + 1], perturbations_per_eval=CAPTUM_BATCH,
                                    **kwargs)
        return run

    return {"lime_image": run_lime_image,
            "shap Partition": lambda: ShapPartition(classifier, max_evals=samples, batch_size=CAPTUM_BATCH)(
                images, target, segments),
            "captum Lime": captum(CaptumLime, n_samples=samples),
            "captum KernelShap": captum(CaptumKernelShap, n_samples=samples),
            "captum FeatureAblation": captum(FeatureAblation)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--samples", type=int, default=300, help="evaluations per image for LIME / SHAP")
    parser.add_argument("--segments", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timings per method and per floor; the fastest is kept")
    parser.add_argument("--out", default="bench_explainers.json")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    classifier = load_model("efficientnet_lite0", weights="imagenet", class_names=["female", "male"], device="cpu")
    images, source = bench_images(args.images, args.size, args.seed)
    segments = slic_segments(images, n_segments=args.segments)
    target = classifier.predict_proba(images).argmax(dim=1).cpu()
    floor_seconds(classifier, 64, args.size)  # warm-up: allocator, kernel choice
    ShapPartition(classifier, max_evals=20)(images[:1], target[:1], segments[:1])  # warm-up: shap's numba JIT

    ours = {
        "lime": lambda: Lime(classifier, num_samples=args.samples)(images, target, segments),
        "shap": lambda: KernelShap(classifier, num_samples=args.samples, max_exact=0)(images, target, segments),
        "occlusion": lambda: Occlusion(classifier)(images, target, segments),
        "gradcam": lambda: GradCam(classifier)(images, target, segments),
    }
    references = reference_runs(classifier, images, segments, target, args.samples)
    compared = {"lime": ["lime_image", "captum Lime"], "shap": ["shap Partition", "captum KernelShap"],
                "occlusion": ["captum FeatureAblation"], "gradcam": []}

    results: dict[str, dict[str, float | int | str]] = {}
    for name, run in [*ours.items(), *references.items()]:
        timings, floors = [], []
        for _ in range(args.repeats):
            seconds, evaluations = timed(classifier, run)
            timings.append(seconds)
            floors.append(floor_seconds(classifier, evaluations, args.size))
        seconds, floor = min(timings), min(floors)
        results[name] = {"seconds": seconds, "evaluations": evaluations, "floor_seconds": floor,
                         "ratio_to_floor": seconds / floor,
                         "ms_per_evaluation": 1000 * seconds / evaluations}
        Console().print(f"{name}: {seconds:.2f} s, {evaluations} evaluations, floor {floor:.2f} s", highlight=False)

    for name, reference_names in compared.items():
        for reference in reference_names:
            mine, theirs = results[name], results[reference]
            results[name][f"speedup_vs_{reference}"] = theirs["ms_per_evaluation"] / mine["ms_per_evaluation"]

    table = Table(title=f"explainers on efficientnet_lite0 @ {args.size}px, {source}, {args.segments} SLIC segments, "
                        f"{args.samples} samples, {torch.get_num_threads()} threads")
    for column in ("method", "evaluations", "seconds", "floor s", "x floor", "ms/eval", "vs reference (their ms/eval / ours)"):
        table.add_column(column, justify="left" if column in ("method",) or column.startswith("vs") else "right")
    for name, row in results.items():
        versus = ", ".join(f"{reference}: {row[f'speedup_vs_{reference}']:.2f}x" for reference in compared.get(name, []))
        table.add_row(("ours " if name in ours else "") + name, str(row["evaluations"]), f"{row['seconds']:.2f}",
                      f"{row['floor_seconds']:.2f}", f"{row['ratio_to_floor']:.3f}", f"{row['ms_per_evaluation']:.2f}",
                      versus)
    Console(width=180).print(table)
    atomic_write_json(args.out, {
        "command": "scripts/bench_explainers.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "model": "efficientnet_lite0 (imagenet weights, 2-class head)", "images": source, "size": args.size,
        "segments_per_image": (segments.flatten(1).max(dim=1).values + 1).tolist(), "samples": args.samples,
        "micro_batch": classifier.micro_batch, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.machine(), "goal": {"ratio_to_floor_max": 1.15, "speedup_vs_reference_min": 1.0},
        "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
