"""``weakspot train`` and ``weakspot finetune``: fine-tune a timm model on a dataset and report accuracy
overall and per group, with one of the augmentation methods of ``weakspot.augment``.

A manifest with a ``split`` column (``weakspot data shortcut`` writes one) is split by it (train, val, test
and optionally clean_test); any other dataset gets a seeded stratified 70/15/15 split. Under
``torchrun --nproc-per-node N`` the same command trains one model with DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from weakspot.errors import WeakspotError

RESULTS_NAME = "results.json"
MODEL_NAME = "model.pt"  # the weights results.json reports on: balanced.pt's, else the kept epoch's
EVAL_SPLITS = ("test", "clean_test")


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    from weakspot.arguments import add_data_arguments, add_runtime_arguments, positive_int
    from weakspot.training.loop import BALANCED_CHECKPOINT, KEEP_CHOICES

    add_data_arguments(parser)
    parser.add_argument("--model", default="efficientnet_lite0", help="timm architecture (default efficientnet_lite0)")
    parser.add_argument("--weights", default="imagenet", help="imagenet (default), none, or a weakspot checkpoint")
    parser.add_argument("--out", required=True,
                        help="run folder: model.pt (the model results.json reports on), results.json, last.pt, best.pt, "
                             "log.jsonl")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    # The defaults are the protocol behind docs/results.md's numbers: 3 epochs, no early stopping, the last epoch
    parser.add_argument("--epochs", type=positive_int, default=3)
    parser.add_argument("--batch-size", type=positive_int, default=64, help="global batch (split across torchrun ranks)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-epochs", type=float, default=0.5)
    parser.add_argument("--schedule", default="cosine", choices=("cosine", "constant"))
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--patience", type=int, default=0,
                        help="early stopping after this many epochs without a better validation accuracy (default 0: off)")
    parser.add_argument("--keep", default="last", choices=KEEP_CHOICES,
                        help="weights the run ends with and is evaluated with: the last epoch's (default; a validation "
                             "split drawn like the training split carries its shortcuts) or the best validation epoch's")
    parser.add_argument("--balance-recall", choices=("on", "off"), default=None,
                        help="after training, shift each class's logit by a constant so that the validation split's "
                             f"per-class recalls are equal, and write the result to {BALANCED_CHECKPOINT} and "
                             f"{MODEL_NAME} (default: on for --method adversarial when a round kept something, the "
                             "loop's last step; off otherwise)")
    parser.add_argument("--no-augment", action="store_true", help="no flip / RandomResizedCrop / colour jitter")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is far faster on cores shared with other jobs)")
    add_runtime_arguments(parser)


def configure_train(parser: argparse.ArgumentParser) -> None:
    _add_training_arguments(parser)
    parser.set_defaults(handler=lambda args: run(args, "erm"))


def configure_finetune(parser: argparse.ArgumentParser) -> None:
    from weakspot.augment.baselines import METHODS

    _add_training_arguments(parser)
    parser.add_argument("--method", default="erm", choices=tuple(METHODS))
    _add_baseline_arguments(parser)
    add_loop_arguments(parser)
    parser.set_defaults(handler=lambda args: run(args, args.method))


def _add_baseline_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of every method but the loop's (``add_loop_arguments``)."""
    from weakspot.arguments import positive_int
    from weakspot.augment.baselines import CUTOUT_FILLS
    from weakspot.augment.oracles import GROUPDRO_STEP

    parser.add_argument("--cutout-area", type=float, default=0.06, help="cutout: occluded fraction of the image")
    parser.add_argument("--cutout-fill", default="random", choices=tuple(CUTOUT_FILLS))
    parser.add_argument("--k", type=positive_int, default=5, help="worstofk: random spatial variants per image")
    parser.add_argument("--pgd-eps", type=float, default=4.0, help="pgd: L-inf radius in /255 units")
    parser.add_argument("--pgd-steps", type=positive_int, default=3)
    parser.add_argument("--masktune-lr", type=float, default=None,
                        help="masktune: learning rate of the masked fine-tuning epoch (default: --lr)")
    parser.add_argument("--jtt-upweight", type=float, default=50.0, help="jtt: lambda_up, the error set's weight")
    parser.add_argument("--jtt-epochs", type=positive_int, default=None,
                        help="jtt: T, epochs of the identification model (default: --epochs)")
    parser.add_argument("--jtt-identification", default=None,
                        help="jtt: a trained weakspot checkpoint (e.g. an ERM run's last.pt) to take the error set "
                             "from instead of training the identification model")
    parser.add_argument("--spare-epochs", type=positive_int, default=1,
                        help="spare: epochs of the early ERM model whose outputs are clustered")
    parser.add_argument("--dro-step", type=float, default=GROUPDRO_STEP,
                        help=f"groupdro: step size of the group weights (default {GROUPDRO_STEP}, the paper's)")
    parser.add_argument("--dfr-base", default=None,
                        help="dfr: a trained weakspot checkpoint (e.g. an ERM run's last.pt) whose head is refitted, "
                             "instead of training ERM first")


def _knob_parser(name: str, annotation: str) -> Any:
    """The argparse type of the ``LoopConfig`` field ``name`` from its annotation (a comma list, an int or a float,
    and 'off' (None) where the field admits None), refusing what ``LoopConfig`` refuses, so a bad value is an error
    on its flag before anything runs."""
    from weakspot.arguments import comma_list
    from weakspot.augment.adversarial import LoopConfig

    if annotation.startswith("tuple"):
        return comma_list
    number = int if annotation.startswith("int") else float
    optional = "None" in annotation

    def parse(text: str) -> int | float | None:
        try:
            value = None if optional and text == "off" else number(text)
            LoopConfig(**{name: value})
        except (ValueError, WeakspotError) as error:
            needs = (str(error).partition("needs ")[2] if isinstance(error, WeakspotError)
                     else "an integer" if number is int else "a number")
            alternative = " or 'off'" if optional else ""
            raise argparse.ArgumentTypeError(f"expected {needs}{alternative}, got {text}") from None
        return value
    return parse


def add_loop_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ``LoopConfig`` field, with its default and help from the field (the loop's one source)."""
    from dataclasses import fields

    from weakspot.augment.adversarial import LoopConfig

    for item in fields(LoopConfig):
        default = item.default
        shown = "off" if default is None else ",".join(default) if isinstance(default, tuple) else default
        parser.add_argument(item.metadata["flag"], dest=f"loop_{item.name}", metavar=item.name.upper(),
                            type=_knob_parser(item.name, str(item.type)),
                            default=default, help=f"adversarial: {item.metadata['help']} (default {shown})")


def loop_config_from_args(args: argparse.Namespace) -> Any:
    """The ``LoopConfig`` of ``add_loop_arguments``' flags, its attacks checked by name."""
    from dataclasses import fields

    from weakspot.attacks.cli import check_attack_names
    from weakspot.augment.adversarial import LoopConfig

    values = {item.name: getattr(args, f"loop_{item.name}") for item in fields(LoopConfig)}
    return LoopConfig(**{**values, "attacks": tuple(check_attack_names(list(values["attacks"])))})


def method_params(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The CLI flags that belong to ``method``."""
    if method == "cutout":
        return {"area": args.cutout_area, "fill": args.cutout_fill}
    if method == "worstofk":
        return {"k": args.k}
    if method == "pgd":
        return {"eps": args.pgd_eps / 255, "alpha": args.pgd_eps / 2 / 255, "steps": args.pgd_steps}
    if method == "masktune":
        return {"finetune_lr": args.masktune_lr}
    if method == "jtt":
        return {"upweight": args.jtt_upweight, "identification_epochs": args.jtt_epochs,
                "identification": args.jtt_identification}
    if method == "afr":
        return {"seed": args.seed}
    if method == "spare":
        return {"identification_epochs": args.spare_epochs, "seed": args.seed}
    if method == "groupdro":
        return {"step_size": args.dro_step}
    if method == "dfr":
        return {"base": args.dfr_base, "seed": args.seed}
    if method == "adversarial":  # checked here: the first attack is built only after the warm-up's epochs
        return {"config": loop_config_from_args(args), "seed": args.seed}
    return {}


# The methods told group labels: the parameter that holds them, the split they come from, and whether the method
# needs them (the oracles, weakspot.augment.oracles) or only uses them where the data has them (AFR's choice)
GROUP_ORACLES = {"groupbalance": ("groups", "train", True), "groupdro": ("groups", "train", True),
                 "dfr": ("val_groups", "val", True), "afr": ("val_groups", "val", False)}


def oracle_groups(splits: dict[str, Any], method: str, args: argparse.Namespace, label_name: str) -> list[str] | None:
    """Each image's group (label x the manifest's cue column and ``--groups``) of the split a method is told;
    None for a method that does without them when the data has none."""
    from weakspot.shortcut import SPLIT_COLUMN
    from weakspot.training.evaluation import group_keys

    _, split, needed = GROUP_ORACLES[method]
    attributes = [g for g in args.groups if g != SPLIT_COLUMN]
    if not attributes and not needed:
        return None
    if not attributes or split not in splits:
        raise WeakspotError(f"{args.data}: --method {method} is told the {split} split's groups: it needs a "
                            f"{split} split and group attributes (a cue column or --groups)")
    return ["/".join(key) for key in group_keys(splits[split], [label_name, *attributes], label_name)]


def load_splits(args: argparse.Namespace) -> dict[str, Any]:
    """ImageSets per split (``weakspot.arguments.split_sets``), with the manifest's cue column when it has one."""
    from weakspot.arguments import dataset_from_args, split_sets
    from weakspot.shortcut import CUE_GROUP, SPLIT_COLUMN, manifest_columns

    columns = manifest_columns(args.data)
    args.groups = [*args.groups, *(c for c in (SPLIT_COLUMN, CUE_GROUP) if c in columns and c not in args.groups)]
    imageset = dataset_from_args(args)
    splits = split_sets(imageset, args.seed)
    if "train" not in splits:
        raise WeakspotError(f"{imageset.source}: no training images")
    return splits


def _print_results(results: dict[str, Any]) -> None:
    """Each evaluated split's accuracy per group; beside the starting checkpoint's when the run started from one."""
    from weakspot.terminal import console
    from weakspot.training.evaluation import comparison_table

    start = results.get("start", {})
    for split in EVAL_SPLITS:
        report = results.get(split)
        if report is None:
            continue
        reports = {"start": start[split], results["method"]: report} if split in start else {results["method"]: report}
        title = f"{results['method']}: {split} accuracy {report['accuracy']:.1%} on {report['n']} images"
        console.print(comparison_table(title, reports))


def _create_transform(args: argparse.Namespace, method: str, splits: dict[str, Any], label_name: str) -> Any:
    """The method's training-stream transform or staged method, with the data it is told."""
    from weakspot.augment.baselines import create_method

    params = method_params(args, method) if hasattr(args, "method") else {}
    if method == "adversarial":
        params.update(images=splits["train"].images, labels=splits["train"].labels)
    if method in GROUP_ORACLES:
        params[GROUP_ORACLES[method][0]] = oracle_groups(splits, method, args, label_name)
    return create_method(method, **params)


def _results(args: argparse.Namespace, method: str, classifier: Any, result: Any, transform: Any,
             evaluate: Callable[[Any], dict[str, Any]], seconds: float, world_size: int) -> dict[str, Any]:
    """What ``results.json`` holds: the run, the method's own details and accuracy per group of each split."""
    from weakspot.augment.adversarial import AdversarialAugment

    results: dict[str, Any] = {
        "method": method, "model": classifier.arch, "data": str(args.data), "size": args.size,
        "epochs_run": len(result.history), "best_epoch": result.best_epoch, "kept_epoch": result.kept_epoch,
        "val_accuracy": result.best_val_accuracy, "stopped_early": result.stopped_early,
        "train_seconds": seconds, "world_size": world_size, "history": result.history}
    if isinstance(transform, AdversarialAugment):
        results["loop_config"] = dataclasses.asdict(transform.config)
        results["adversarial_rounds"] = [dataclasses.asdict(entry) for entry in transform.history]
    if hasattr(transform, "details"):
        results["method_details"] = transform.details
    if result.recall_balance is not None:  # the model reported on is then balanced.pt
        results["recall_balance"] = result.recall_balance
    results.update(evaluate(classifier))
    return results


def _evaluate_splits(classifier: Any, splits: dict[str, Any], attributes: list[str], label_name: str
                     ) -> dict[str, Any]:
    """Accuracy per group of the validation split (what JTT's hyperparameters are tuned on) and the test splits;
    a clean test split has no cue column to group by."""
    from weakspot.shortcut import CUE_GROUP
    from weakspot.training.evaluation import evaluate_groups

    reports = {}
    for split in ("val", *EVAL_SPLITS):
        if split in splits:
            group_attributes = [a for a in attributes if a != CUE_GROUP] if split == "clean_test" else attributes
            reports[split] = evaluate_groups(classifier, splits[split], group_attributes, label_name)
    return reports


def run(args: argparse.Namespace, method: str) -> int:
    import torch

    from weakspot.augment.adversarial import AdversarialAugment
    from weakspot.arguments import micro_batch_from_args, settle_size
    from weakspot.distributed import finish_distributed, init_distributed
    from weakspot.fileio import atomic_write_json
    from weakspot.models import linear_head, load_model
    from weakspot.shortcut import SPLIT_COLUMN
    from weakspot.training.loop import TrainConfig, fit

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                         label_smoothing=args.label_smoothing, seed=args.seed, warmup_epochs=args.warmup_epochs,
                         schedule=args.schedule, patience=args.patience or None, augment=not args.no_augment,
                         keep=args.keep)
    config.validate()
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, device = init_distributed(args.device)
    try:
        weights = None if args.weights == "none" else args.weights
        pretrained = weights in (None, "imagenet")
        micro_batch = micro_batch_from_args(args)
        # a checkpoint is loaded before the data: its input size is the images' default side
        classifier = None if pretrained else load_model(None, weights=weights, device=device, micro_batch=micro_batch)
        settle_size(args, None if classifier is None else classifier.preprocessing.input_size)
        splits = load_splits(args)
        train, val = splits["train"], splits.get("val")
        balance = None if args.balance_recall is None else args.balance_recall == "on"  # None: the loop decides
        if val is None and (balance or (balance is None and method == "adversarial")):  # before any training
            raise WeakspotError(f"{args.data}: --balance-recall (on by default for the adversarial loop) fits on the "
                                "validation split, and there is none; give one, or --balance-recall off")
        label_name = args.label or "class"
        transform = _create_transform(args, method, splits, label_name)
        torch.manual_seed(args.seed)
        if classifier is None:
            classifier = load_model(args.model, weights=weights, class_names=train.class_names, device=device,
                                    micro_batch=micro_batch)
        elif classifier.class_names != train.class_names:
            raise WeakspotError(f"{args.weights}: classes {classifier.class_names} differ from the data's {train.class_names}")
        if balance or (balance is None and method == "adversarial"):  # refused now, not after the training
            linear_head(classifier, "the class-bias balance (--balance-recall)", train.images[:1])
        if method == "afr" or (method == "dfr" and not args.dfr_base):  # heads refitted after training
            linear_head(classifier, method, train.images[:1])
        if isinstance(transform, AdversarialAugment):
            transform.check(classifier)
        attributes = [label_name, *(g for g in args.groups if g != SPLIT_COLUMN)]

        def evaluate(model: Any) -> dict[str, Any]:
            return _evaluate_splits(model, splits, attributes, label_name)

        # a run from a checkpoint ends with the starting model's groups beside the result's (same splits, groups)
        start = None if pretrained or not rank.is_main else evaluate(classifier)
        started = time.perf_counter()
        run_meta = {"method": method, "data": str(args.data), "label": label_name}
        val_images, val_labels = (val.images, val.labels) if val else (None, None)
        common = {"out_dir": args.out, "resume": args.resume, "progress": not args.no_progress, "meta": run_meta,
                  "balance_recall": balance}
        if hasattr(transform, "fit"):  # a staged method (MaskTune, JTT) runs its own fits
            result = transform.fit(classifier, train.images, train.labels, config, val_images, val_labels, **common)
        else:
            result = fit(classifier, train.images, train.labels, config, val_images=val_images, val_labels=val_labels,
                         transform=transform, **common)
        if not rank.is_main:
            return 0
        seconds = time.perf_counter() - started  # with the balance: part of the method's cost
        results = _results(args, method, classifier, result, transform, evaluate, seconds, rank.world_size)
        if start is not None:
            results["start"] = {"checkpoint": str(args.weights), **start}
        classifier.save(f"{args.out}/{MODEL_NAME}", meta=run_meta)
        atomic_write_json(f"{args.out}/{RESULTS_NAME}", results)
        _print_results(results)
        return 0
    finally:
        finish_distributed()
