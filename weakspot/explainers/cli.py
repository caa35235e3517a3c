"""``weakspot explain``: one image, one method, one PNG in the studies' conventions."""

from __future__ import annotations

import argparse
from typing import Any

from weakspot.errors import WeakspotError

METHODS = ("lime", "shap", "shap-partition", "gradcam", "occlusion")
DEFAULT_SIZE = 96


def configure(parser: argparse.ArgumentParser) -> None:
    from weakspot.arguments import add_runtime_arguments, positive_int

    parser.add_argument("--checkpoint", required=True, help="a weakspot checkpoint (.pt)")
    parser.add_argument("--image", required=True, help="the image to explain")
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--out", required=True, help="PNG to write (atomically)")
    parser.add_argument("--size", type=positive_int, default=None,
                        help=f"image side in pixels (default: the checkpoint's input size, else {DEFAULT_SIZE})")
    parser.add_argument("--segments", type=positive_int, default=50, help="about this many superpixels (default 50)")
    parser.add_argument("--segmentation", default="slic", choices=("slic", "grid"))
    parser.add_argument("--samples", type=positive_int, default=None,
                        help="model evaluations for lime / shap / shap-partition (default: each method's own)")
    parser.add_argument("--fill", default=None, help="what hides a segment: white, black, gray, mean, blur, "
                                                     "segment-mean (default: each method's own)")
    parser.add_argument("--target", default=None, help="class to explain, by name or index (default: the prediction)")
    add_runtime_arguments(parser)
    parser.set_defaults(handler=run)


def _explainer_params(args: argparse.Namespace) -> dict[str, Any]:
    """Map the generic flags onto each method's own parameter names."""
    params: dict[str, Any] = {"n_segments": args.segments, "segmentation": args.segmentation}
    if args.fill is not None and args.method != "gradcam":
        params["fill"] = args.fill
    if args.samples is not None:
        budget_name = {"lime": "num_samples", "shap": "num_samples", "shap-partition": "max_evals"}.get(args.method)
        if budget_name is None:
            raise WeakspotError(f"--samples does not apply to {args.method}")
        params[budget_name] = args.samples
    if args.method in ("lime", "shap"):
        params["seed"] = args.seed
    return params


def _target_index(target: str | None, class_names: list[str]) -> int | None:
    if target is None:
        return None
    if target in class_names:
        return class_names.index(target)
    if target.isdigit() and int(target) < len(class_names):
        return int(target)
    raise WeakspotError(f"--target {target}: not a class of this model ({', '.join(class_names)})")


def run(args: argparse.Namespace) -> int:
    import torch

    from weakspot.arguments import micro_batch_from_args
    from weakspot.terminal import console
    from weakspot.data import read_image
    from weakspot.explainers import create_explainer
    from weakspot.explainers.figures import explanation_figure, save_figure
    from weakspot.models import load_checkpoint

    classifier = load_checkpoint(args.checkpoint, device=args.device, micro_batch=micro_batch_from_args(args))
    size = args.size or classifier.preprocessing.input_size or DEFAULT_SIZE
    image = read_image(args.image, size)
    target = _target_index(args.target, classifier.class_names)
    torch.manual_seed(args.seed)
    explainer = create_explainer(args.method, classifier, **_explainer_params(args))
    attribution = explainer(image[None], target=None if target is None else torch.tensor([target]))
    if not (torch.isfinite(attribution.probability).all() and torch.isfinite(attribution.heatmap).all()):
        raise WeakspotError(f"{args.checkpoint}: the model returned NaN/inf on {args.image}; nothing to explain")
    save_figure(explanation_figure(image, attribution, 0, classifier.class_names), args.out)
    label = classifier.class_names[int(attribution.target[0])]
    top = ", ".join(str(int(s)) for s in attribution.top_segments(3)[0])
    console.print(f"{args.out}: {args.method} explanation of '{label}' (p={float(attribution.probability[0]):.3f}); "
                  f"top segments {top}; {int(attribution.evaluations[0])} model evaluations", highlight=False)
    return 0
