"""``weakspot explain``: one image, one method, one PNG in the studies' conventions."""

from __future__ import annotations

import argparse
from typing import Any

from weakspot.errors import WeakspotError

METHODS = ("lime", "shap", "shap-partition", "gradcam", "occlusion")
SAMPLES_PARAMETER = {"lime": "num_samples", "shap": "num_samples", "shap-partition": "max_evals"}  # what --samples sets


def configure(parser: argparse.ArgumentParser) -> None:
    from weakspot.arguments import DEFAULT_SIZE, add_model_arguments, add_runtime_arguments, image_size, positive_int

    add_model_arguments(parser)
    parser.add_argument("--image", required=True, help="the image to explain")
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--out", required=True, help="PNG to write (atomically)")
    parser.add_argument("--size", type=image_size, default=None,
                        help=f"image side in pixels (default: the model's input size, else {DEFAULT_SIZE})")
    parser.add_argument("--segments", type=positive_int, default=50, help="about this many superpixels (default 50)")
    parser.add_argument("--segmentation", default="slic", choices=("slic", "grid"))
    parser.add_argument("--samples", type=positive_int, default=None,
                        help="model evaluations for lime / shap / shap-partition (default: each method's own)")
    parser.add_argument("--fill", default=None, help="what hides a segment: white, black, gray, mean, blur, "
                                                     "segment-mean (default: each method's own)")
    parser.add_argument("--target", default=None, help="class to explain, by name or index (default: the prediction)")
    add_runtime_arguments(parser)
    parser.set_defaults(handler=run, outputs=lambda args: [args.out])


def explainer_params(method: str, segments: int, segmentation: str = "slic", samples: int | None = None,
                     fill: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Map the generic flags onto each method's own parameter names (explain, audit)."""
    from weakspot.explainers.shap import MAX_EXACT_SEGMENTS

    params: dict[str, Any] = {"n_segments": segments, "segmentation": segmentation}
    if fill is not None and method != "gradcam":
        params["fill"] = fill
    if samples is not None:
        if method not in SAMPLES_PARAMETER:
            raise WeakspotError(f"--samples does not apply to {method}")
        params[SAMPLES_PARAMETER[method]] = samples
        if method == "shap":  # exact enumeration (2^K evaluations) only while it fits in the samples
            params["max_exact"] = min(MAX_EXACT_SEGMENTS, samples.bit_length() - 1)
    if method in ("lime", "shap"):
        params["seed"] = seed
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

    from weakspot.arguments import classifier_from_args
    from weakspot.terminal import console
    from weakspot.data import read_image
    from weakspot.explainers import create_explainer
    from weakspot.explainers.figures import explanation_figure, save_figure

    classifier = classifier_from_args(args)
    image = read_image(args.image, args.size)
    target = _target_index(args.target, classifier.class_names)
    torch.manual_seed(args.seed)
    params = explainer_params(args.method, args.segments, args.segmentation, args.samples, args.fill, args.seed)
    explainer = create_explainer(args.method, classifier, **params)
    attribution = explainer(image[None], target=None if target is None else torch.tensor([target]))
    if not (torch.isfinite(attribution.probability).all() and torch.isfinite(attribution.heatmap).all()):
        raise WeakspotError(f"{args.checkpoint}: the model returned NaN/inf on {args.image}; nothing to explain")
    save_figure(explanation_figure(image, attribution, 0, classifier.class_names), args.out)
    label = classifier.class_names[int(attribution.target[0])]
    top = ", ".join(str(int(s)) for s in attribution.top_segments(3)[0])
    console.print(f"{args.out}: {args.method} explanation of '{label}' (p={float(attribution.probability[0]):.3f}); "
                  f"top segments {top}; {int(attribution.evaluations[0])} model evaluations", highlight=False)
    return 0
