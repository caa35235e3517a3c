"""``weakspot import``: a model trained elsewhere (a plain state_dict: ``.pth``/``.pt`` or ``.safetensors``)
becomes a weakspot checkpoint, so later runs need only ``--checkpoint`` and no model flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from weakspot.arguments import add_model_arguments, classifier_from_args
from weakspot.terminal import console


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, plain_required=True)
    parser.add_argument("--out", required=True, help="the weakspot checkpoint to write (atomically)")
    parser.set_defaults(handler=run, outputs=lambda args: [args.out], device="cpu", micro_batch=None)


def run(args: argparse.Namespace) -> int:
    classifier = classifier_from_args(args)
    meta = {"imported_from": str(Path(args.checkpoint).resolve())}
    path = classifier.save(args.out, meta={**classifier.meta, **meta})
    console.print(f"{path}: weakspot checkpoint of a '{classifier.arch}' with classes "
                  f"{', '.join(classifier.class_names)}; input size {classifier.preprocessing.input_size or 'as given'}, "
                  f"mean {list(classifier.preprocessing.mean)}, std {list(classifier.preprocessing.std)}", highlight=False)
    return 0
