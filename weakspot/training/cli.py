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
from typing import Any

from weakspot.errors import WeakspotError

RESULTS_NAME = "results.json"
EVAL_SPLITS = ("test", "clean_test")


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    from weakspot.arguments import add_data_arguments, add_runtime_arguments, positive_int
    from weakspot.training.loop import BALANCED_CHECKPOINT, KEEP_CHOICES

    add_data_arguments(parser)
    parser.add_argument("--model", default="efficientnet_lite0", help="timm architecture (default efficientnet_lite0)")
    parser.add_argument("--weights", default="imagenet", help="imagenet (default), none, or a weakspot checkpoint")
    parser.add_argument("--out", required=True, help="run folder: last.pt, best.pt, log.jsonl, results.json")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    parser.add_argument("--epochs", type=positive_int, default=5)
    parser.add_argument("--batch-size", type=positive_int, default=64, help="global batch (split across torchrun ranks)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-epochs", type=float, default=0.5)
    parser.add_argument("--schedule", default="cosine", choices=("cosine", "constant"))
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--patience", type=int, default=3, help="early stopping on validation accuracy (0: off)")
    parser.add_argument("--keep", default="best", choices=KEEP_CHOICES,
                        help="weights the run ends with and is evaluated with: the best validation epoch's (default) or "
                             "the last epoch's (a validation split drawn like the training split carries its shortcuts)")
    parser.add_argument("--balance-recall", choices=("on", "off"), default=None,
                        help="after training, shift each class's logit by a constant so that the validation split's "
                             f"per-class recalls are equal, and write the result to {BALANCED_CHECKPOINT} (default: "
                             "on for --method adversarial when a round kept something, the loop's last step; off "
                             "otherwise)")
    parser.add_argument("--no-augment", action="store_true", help="no flip / RandomResizedCrop / colour jitter")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is far faster on cores shared with other jobs)")
    add_runtime_arguments(parser)


def configure_train(parser: argparse.ArgumentParser) -> None:
    _add_training_arguments(parser)
    parser.set_defaults(handler=lambda args: run(args, "erm"))


def configure_finetune(parser: argparse.ArgumentParser) -> None:
    from weakspot.augment.adversarial import (CONFLICT_MODES, DEFAULT_ALTERNATE_GRIDS, DEFAULT_ATTACKS,
                                              DEFAULT_BUDGET, DEFAULT_CONFLICTS, DEFAULT_FALLBACK_GRID,
                                              DEFAULT_FRACTION, DEFAULT_GATE, DEFAULT_GATE_RETEST,
                                              DEFAULT_LR_RESTART, DEFAULT_RETEST_MARGINAL,
                                              DEFAULT_GUIDANCE_SHIFT, DEFAULT_POOL_CHECK, DEFAULT_REFRESH,
                                              DEFAULT_ROUNDS, DEFAULT_SPREAD,
                                              DEFAULT_SPREAD_ERASE, DEFAULT_SPREAD_LEAD, DEFAULT_WARMUP,
                                              SPREAD_ERASES, ZONE_BASE, ZONE_BASES, ZONE_GROWTH,
                                              ZONE_LEAST, ZONE_SHARE)
    from weakspot.augment.baselines import CUTOUT_FILLS, METHODS
    from weakspot.augment.oracles import GROUPDRO_STEP
    from weakspot.arguments import add_switch, comma_list, off_or_number, positive_int

    _add_training_arguments(parser)
    parser.add_argument("--method", default="erm", choices=tuple(METHODS))
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
    parser.add_argument("--dro-step", type=float, default=GROUPDRO_STEP,
                        help=f"groupdro: step size of the group weights (default {GROUPDRO_STEP}, the paper's)")
    parser.add_argument("--dfr-base", default=None,
                        help="dfr: a trained weakspot checkpoint (e.g. an ERM run's last.pt) whose head is refitted, "
                             "instead of training ERM first")
    parser.add_argument("--attacks", type=comma_list, default=list(DEFAULT_ATTACKS),
                        help="adversarial: attacks that feed the loop (superpixel, block, button, crop, flip, ...)")
    parser.add_argument("--budget", type=positive_int, default=DEFAULT_BUDGET,
                        help=f"adversarial: queries per image and attack (default {DEFAULT_BUDGET})")
    parser.add_argument("--fraction", type=float, default=DEFAULT_FRACTION,
                        help=f"adversarial: share of training images attacked per round (default {DEFAULT_FRACTION})")
    parser.add_argument("--mix-ratio", type=float, default=0.5, help="adversarial: pool images added per clean image in a batch")
    parser.add_argument("--adv-warmup", type=float, default=DEFAULT_WARMUP,
                        help=f"adversarial: epochs of plain training before the first round (default {DEFAULT_WARMUP}; "
                             "fractional: mid-epoch)")
    parser.add_argument("--refresh", type=float, default=DEFAULT_REFRESH,
                        help=f"adversarial: epochs between attack rounds (default {DEFAULT_REFRESH})")
    parser.add_argument("--rounds", type=positive_int, default=DEFAULT_ROUNDS,
                        help=f"adversarial: at most this many attack rounds that keep something; a round that keeps "
                             f"nothing is retried --refresh epochs later (default {DEFAULT_ROUNDS})")
    parser.add_argument("--cache-explanations", action="store_true",
                        help="adversarial: reuse an image's explanation in later rounds (fewer queries, older ranking)")
    parser.add_argument("--no-transplant", dest="transplant", action="store_false",
                        help="adversarial: do not paste each erased cue into an image of another class")
    parser.add_argument("--cues-only", action=argparse.BooleanOptionalAction, default=True,
                        help="adversarial: keep an erasing removal only when its transplant fools the model too "
                             "(default; needs transplants)")
    parser.add_argument("--spread", type=float, default=None,
                        help="adversarial: share of each batch's clean images that get the cue zone of a class confirmed "
                             "in the last round pasted from a donor or filled (a coin flip, blind to the label; default "
                             f"{DEFAULT_SPREAD}, 0 with --no-transplant); no queries")
    parser.add_argument("--adv-restart", type=positive_int, default=None, metavar="EPOCHS",
                        help="adversarial: train ERM for EPOCHS, run one round on that model, then train from the "
                             "initial weights with what it kept (JTT's restart; --adv-warmup, --refresh and "
                             "--rounds then do not apply)")
    parser.add_argument("--cue-gate", type=off_or_number(lambda value: -1.0 <= value <= 1.0, "a number in [-1, 1]"), default=DEFAULT_GATE,
                        help="adversarial: keep a class's cues only when their transplants flip other-class images "
                             "this much more often than a same-size region elsewhere (share; default "
                             f"{DEFAULT_GATE}; 'off' keeps every confirmed cue)")
    parser.add_argument("--conflicts", default=DEFAULT_CONFLICTS, choices=(*CONFLICT_MODES, "off"),
                        help="adversarial: after a round that confirmed cues, add to the pool the training images "
                             "that conflict with them: 'errors' (default) the ones the model gets wrong, 'zone' "
                             "those whose cue zone, filled, moves the model against their label")
    parser.add_argument("--conflict-refresh", type=off_or_number(lambda value: value > 0, "epochs > 0"), default=None, metavar="EPOCHS",
                        help="adversarial: find the pool's conflicting images again with the current model every "
                             "EPOCHS after the round (default off: the round's model's alone)")
    parser.add_argument("--accumulate-conflicts", action=argparse.BooleanOptionalAction, default=False,
                        help="adversarial: with --conflict-refresh, keep the conflicting images found earlier "
                             "beside the current model's (default: replace them)")
    add_switch(parser, "--agreements", False,
               "adversarial: add with each class's conflicting images as many of its other training images, so the "
               "pool's natural images hold the cue as often as not")
    parser.add_argument("--pool-check", type=off_or_number(lambda value: value > 0, "epochs > 0"),
                        default=DEFAULT_POOL_CHECK, metavar="EPOCHS",
                        help="adversarial: measure how the model reads the round's cues every EPOCHS after the "
                             "round and keep the pool in the stream only while some class's cues still push images "
                             f"towards it (default {DEFAULT_POOL_CHECK}; 'off' keeps it to the end; needs transplants)")
    parser.add_argument("--spread-erase", default=DEFAULT_SPREAD_ERASE, choices=SPREAD_ERASES,
                        help="adversarial: how the spread erases a cue: 'swap' in the zone of a batch image of "
                             "another class, or 'fill' the zone with the cue's fill (default "
                             f"{DEFAULT_SPREAD_ERASE})")
    parser.add_argument("--spread-lead", type=off_or_number(lambda value: value > 0, "a number > 0"),
                        default=DEFAULT_SPREAD_LEAD, metavar="LEAD",
                        help="adversarial: scale the spread by the round's largest dependence-test lead over LEAD (at "
                             "most 1), so a cue the model barely depends on gets fewer edits (default "
                             f"{DEFAULT_SPREAD_LEAD or 'off'}; 'off' spreads at the full rate, as does --cue-gate off: "
                             "no lead)")
    parser.add_argument("--zone-share", type=float, default=ZONE_SHARE, metavar="SHARE",
                        help="adversarial: a class's cue zone, which the spread pastes and erases, is the pixels at "
                             f"least SHARE as covered by its cues as the most covered one (default {ZONE_SHARE}), or "
                             "with --zone-base cues those SHARE of its cues cover")
    parser.add_argument("--zone-base", default=ZONE_BASE, choices=ZONE_BASES,
                        help=f"adversarial: what --zone-share is a share of (default {ZONE_BASE})")
    parser.add_argument("--zone-least", type=int, default=ZONE_LEAST, metavar="CUES",
                        help="adversarial: keep in the cue zone only the pixels at least CUES of its cues cover (or as "
                             f"many as cover the most covered pixel, if fewer; default {ZONE_LEAST})")
    parser.add_argument("--zone-growth", type=float, default=ZONE_GROWTH, metavar="SIDE",
                        help=f"adversarial: grow the cue zone by SIDE of the image side (default {ZONE_GROWTH})")
    add_switch(parser, "--guidance-shift", DEFAULT_GUIDANCE_SHIFT,
               "adversarial: the round's box attacks explain each image on its own grid, shifted by a random share "
               "of a cell, so a cue on a line of the regular grid is not missed on every image")
    add_switch(parser, "--alternate-grids", DEFAULT_ALTERNATE_GRIDS,
               "adversarial: each round explains on the other guidance grid than the round before (regular, "
               "shifted, ...), so a retry after a round that confirmed nothing does not miss a cue the grid splits "
               "again")
    add_switch(parser, "--fallback-grid", DEFAULT_FALLBACK_GRID,
               "adversarial: a round after the first that confirms nothing on its guidance grid explains its images "
               "again on the other grid (regular or shifted) and keeps what that finds")
    add_switch(parser, "--lr-restart", DEFAULT_LR_RESTART,
               "adversarial: after the first round that keeps something the learning rate's decay starts again from "
               "its peak over the rest of the run, so a cue confirmed late still has the steps to be unlearnt")
    add_switch(parser, "--gate-retest", DEFAULT_GATE_RETEST,
               "adversarial: a class whose cues passed the dependence test by less than twice the gate is tested "
               "again on a second sample of training images, and kept only when the two leads average the gate")
    add_switch(parser, "--retest-marginal", DEFAULT_RETEST_MARGINAL,
               "adversarial: the retest attacks only its second sample's images of the marginal classes (a class's "
               "cues come from its own images); the others are only recipients of the dependence test")
    parser.set_defaults(handler=lambda args: run(args, args.method))


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
    if method == "groupdro":
        return {"step_size": args.dro_step}
    if method == "dfr":
        return {"base": args.dfr_base, "seed": args.seed}
    if method == "adversarial":
        from weakspot.augment.adversarial import ZoneRule
        from weakspot.attacks.cli import check_attack_names

        # checked here: with --adv-warmup the first attack is built only after epochs of training
        return {"attacks": check_attack_names(args.attacks), "budget": args.budget, "fraction": args.fraction,
                "mix_ratio": args.mix_ratio, "warmup_epochs": args.adv_warmup, "refresh": args.refresh,
                "rounds": args.rounds, "cache_explanations": args.cache_explanations, "transplant": args.transplant,
                "cues_only": args.cues_only, "spread": args.spread, "gate": args.cue_gate,
                "conflicts": None if args.conflicts == "off" else args.conflicts,
                "conflict_refresh": args.conflict_refresh, "accumulate_conflicts": args.accumulate_conflicts,
                "agreements": args.agreements, "pool_check": args.pool_check,
                "spread_erase": args.spread_erase, "spread_lead": args.spread_lead,
                "zone": ZoneRule(args.zone_share, args.zone_growth, args.zone_base, args.zone_least),
                "guidance_shift": args.guidance_shift, "alternate_grids": args.alternate_grids,
                "fallback_grid": args.fallback_grid, "lr_restart": args.lr_restart,
                "gate_retest": args.gate_retest, "retest_marginal": args.retest_marginal, "seed": args.seed,
                "restart": args.adv_restart}
    return {}


# The oracles' parameter that holds group labels, and the split they come from (weakspot.augment.oracles)
GROUP_ORACLES = {"groupbalance": ("groups", "train"), "groupdro": ("groups", "train"), "dfr": ("val_groups", "val")}


def oracle_groups(splits: dict[str, Any], method: str, args: argparse.Namespace, label_name: str) -> list[str]:
    """Each image's group (label x the manifest's cue column and ``--groups``) of the split an oracle is told."""
    from weakspot.shortcut import SPLIT_COLUMN
    from weakspot.training.evaluation import group_keys

    split = GROUP_ORACLES[method][1]
    attributes = [g for g in args.groups if g != SPLIT_COLUMN]
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
    from rich.table import Table

    from weakspot.terminal import console

    for split in EVAL_SPLITS:
        report = results.get(split)
        if report is None:
            continue
        table = Table(title=f"{results['method']}: {split} accuracy {report['accuracy']:.1%} on {report['n']} images")
        table.add_column("group")
        table.add_column("images", justify="right")
        table.add_column("accuracy", justify="right")
        for row in report["groups"]:
            marker = " *" if row["group"] == report["worst_group"] else ""
            table.add_row(", ".join(f"{k}={v}" for k, v in row["group"].items()), str(row["n"]), f"{row['accuracy']:.1%}{marker}")
        console.print(table)


def run(args: argparse.Namespace, method: str) -> int:
    import torch

    from weakspot.augment.adversarial import AdversarialAugment
    from weakspot.augment.baselines import create_method
    from weakspot.augment.restart import AdversarialRestart
    from weakspot.arguments import micro_batch_from_args
    from weakspot.distributed import finish_distributed, init_distributed
    from weakspot.fileio import atomic_write_json
    from weakspot.models import load_model
    from weakspot.shortcut import CUE_GROUP, SPLIT_COLUMN
    from weakspot.training.evaluation import evaluate_groups
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
        splits = load_splits(args)
        train = splits["train"]
        balance = None if args.balance_recall is None else args.balance_recall == "on"  # None: the loop decides
        if "val" not in splits and (balance or (balance is None and method == "adversarial")):  # before any training
            raise WeakspotError(f"{args.data}: --balance-recall (on by default for the adversarial loop) fits on the "
                                "validation split, and there is none; give one, or --balance-recall off")
        params = method_params(args, method) if hasattr(args, "method") else {}
        label_name = args.label or "class"
        if method == "adversarial":
            params.update(images=train.images, labels=train.labels)
        if method in GROUP_ORACLES:
            params[GROUP_ORACLES[method][0]] = oracle_groups(splits, method, args, label_name)
        transform = create_method(method, **params)
        torch.manual_seed(args.seed)
        weights = None if args.weights == "none" else args.weights
        classifier = load_model(args.model if weights in (None, "imagenet") else None, weights=weights,
                                class_names=train.class_names, device=device, micro_batch=micro_batch_from_args(args))
        if classifier.class_names != train.class_names:
            raise WeakspotError(f"{args.weights}: classes {classifier.class_names} differ from the data's {train.class_names}")
        loop = transform.loop if isinstance(transform, AdversarialRestart) else transform
        if isinstance(loop, AdversarialAugment):
            loop.check(classifier)
        val = splits.get("val")
        started = time.perf_counter()
        run_meta = {"method": method, "data": str(args.data), "label": label_name}
        val_images, val_labels = (val.images, val.labels) if val else (None, None)
        if hasattr(transform, "fit"):  # a staged method (MaskTune, JTT) runs its own fits
            result = transform.fit(classifier, train.images, train.labels, config, val_images, val_labels,
                                   out_dir=args.out, resume=args.resume, progress=not args.no_progress, meta=run_meta,
                                   balance_recall=balance)
        else:
            result = fit(classifier, train.images, train.labels, config, val_images=val_images, val_labels=val_labels,
                         out_dir=args.out, resume=args.resume, transform=transform, progress=not args.no_progress,
                         meta=run_meta, balance_recall=balance)
        seconds = time.perf_counter() - started  # with the balance: part of the method's cost
        if not rank.is_main:
            return 0
        attributes = [label_name, *(g for g in args.groups if g != SPLIT_COLUMN)]
        results: dict[str, Any] = {
            "method": method, "model": classifier.arch, "data": str(args.data), "size": args.size,
            "epochs_run": len(result.history), "best_epoch": result.best_epoch, "kept_epoch": result.kept_epoch,
            "val_accuracy": result.best_val_accuracy, "stopped_early": result.stopped_early,
            "train_seconds": seconds, "world_size": rank.world_size, "history": result.history}
        if isinstance(loop, AdversarialAugment):
            results["adversarial_rounds"] = [dataclasses.asdict(entry) for entry in loop.history]
        if hasattr(transform, "details"):
            results["method_details"] = transform.details
        if result.recall_balance is not None:  # the model reported on is then balanced.pt
            results["recall_balance"] = result.recall_balance
        if val is not None:  # per group too: what JTT's hyperparameters are tuned on (validation worst group)
            results["val"] = evaluate_groups(classifier, val, attributes, label_name)
        for split in EVAL_SPLITS:
            if split in splits:
                group_attributes = attributes if split == "test" else [a for a in attributes if a != CUE_GROUP]
                results[split] = evaluate_groups(classifier, splits[split], group_attributes, label_name)
        atomic_write_json(f"{args.out}/{RESULTS_NAME}", results)
        _print_results(results)
        return 0
    finally:
        finish_distributed()
