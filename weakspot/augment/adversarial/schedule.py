"""Schedule: when the loop's stages run inside ``weakspot.training.fit``, and the transform that runs them.

``AdversarialAugment`` is a training-stream transform (``weakspot.training.BatchTransform``) with a
``start_step`` hook. After ``warmup`` epochs a round runs: locate cues on a seeded ``fraction`` of the training
images, confirm them (a marginal class on a second sample), and make the pool from what they fooled plus the
images the model gets wrong. A round that keeps nothing is retried ``refresh`` epochs later, on the shifted
guidance grid (a cue on a line of the regular grid is split between cells); up to ``rounds`` rounds keep
something. A round whose best class lead stays under ``RETRY_LEAD_SHARE`` of the gate is not retried: nothing
there is close to a cue, and each retry costs a round's attacks (what a run with no shortcut pays for). After a
round that kept something the learning rate's decay starts again from its peak, so the cue has steps to be
unlearnt; every ``pool_check`` epochs the model's reading of the cues is measured and the pool
leaves the stream once no class's cues still push towards it (kept to the end, it pushes the model past
balance). Each batch gets the spread and ``mix_ratio`` pool images. ``weakspot.training.fit`` ends a loop that
kept something with the class-bias balance (``weakspot.training.calibration``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from weakspot.augment.adversarial.config import LoopConfig
from weakspot.augment.adversarial.confirm import cue_effects, marginal_classes, settled_classes
from weakspot.augment.adversarial.counterexamples import CONFLICTS, Pool, natural_conflicts, spread_cues
from weakspot.augment.adversarial.cues import CueBank
from weakspot.augment.adversarial.locate import Harvest, locate, loop_attack
from weakspot.models import Classifier

POOL_CHECK_CUES = 16  # cues per class a pool check pastes: the whole bank costs more and decides the same
# A round that kept nothing is retried only when a class's lead reached this share of the gate: the first rounds
# of planted cues that a retry confirmed led by 0.09-0.16 (docs/results.md, "The loop stops looking").
RETRY_LEAD_SHARE = 0.5


@dataclass
class RoundLog:
    """One round as ``results.json`` records it."""

    epoch: float  # epochs of training done when the round ran
    attacked: int
    kept: dict[str, int]  # images kept per source
    seconds: float
    cues_per_class: dict[int, int] = field(default_factory=dict)  # the bank's cues per class index
    gate_lead: dict[str, float] = field(default_factory=dict)  # "attack:class": cue minus control flip share
    retest_lead: dict[str, float] = field(default_factory=dict)  # the same on the marginal classes' second sample
    grids_tried: int = 1  # 2 when the regular grid confirmed nothing and the shifted one was tried
    zone_share: dict[int, float] = field(default_factory=dict)  # per cue class: the image share its zone covers
    pool_checks: list[tuple[float, dict[int, float], bool]] = field(default_factory=list)  # (epoch, effects, pool on)
    best_lead: float | None = None  # the largest class lead over the round's grids (None: no cue to test)


class AdversarialAugment:
    """The adversarial loop as a training-stream transform (see the module docstring).

    ``state``/``load_state`` carry the rounds done, the bank and the pool through a checkpoint, so a resumed run
    continues exactly as an uninterrupted one."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, config: LoopConfig = LoopConfig(),
                 seed: int = 0) -> None:
        self.images, self.labels, self.config, self.seed = images, labels, config, seed
        self.cues = CueBank.empty(images)
        self.pool = Pool.empty()
        self.pool_active = True  # False once a pool check found no cue that still pushes towards its class
        self.pool_checked_at = math.inf  # epochs done when the pool check last ran
        self.history: list[RoundLog] = []
        self.last_round = -1
        self.empty_rounds = 0  # rounds that kept nothing: they do not count against ``rounds``
        self.searching = True  # False once a round that kept nothing led far under the gate: no retry follows

    @property
    def balances_recall(self) -> bool:
        """Whether ``fit`` ends with the class-bias balance by default: when a round kept something, whose pool
        and spread moved what the stream shows each class. A loop that kept nothing keeps ERM's model."""
        return any(sum(entry.kept.values()) for entry in self.history)

    def due_round(self, progress: float) -> int | None:
        """The round to run at ``progress`` (epochs done), or None. Round k is due at ``warmup + k * refresh``
        (at most ``rounds`` that keep something); a step past several due points runs the latest."""
        if progress < self.config.warmup or not self.searching:
            return None
        latest = math.floor((progress - self.config.warmup) / self.config.refresh + 1e-9)
        if self.config.rounds is not None:
            latest = min(latest, self.config.rounds - 1 + self.empty_rounds)
        return latest if latest > self.last_round else None

    def check(self, classifier: Classifier, images: int = 2) -> None:
        """Run every attack on a few training images, labelled with the model's own predictions, so that a bad
        attack or a budget too small for its guidance fails before training rather than after the warm-up."""
        predicted, _ = classifier.predict(self.images[:images])
        for name in self.config.attacks:
            loop_attack(name, classifier, self.config.budget, self.seed, False)(self.images[:images].cpu(),
                                                                                predicted.cpu())

    def start_step(self, progress: float, classifier: Classifier) -> bool:
        """Run a round or a pool check when one is due; True asks ``fit`` to restart the learning rate's decay
        (after a round that kept something)."""
        index = self.due_round(progress)
        if index is not None:
            self.run_round(classifier, index, progress)
            return bool(len(self.pool))
        if self.config.pool_check and progress >= self.pool_checked_at + self.config.pool_check - 1e-9:
            self.check_pool(classifier, progress)
        return False

    def run_round(self, classifier: Classifier, index: int, progress: float) -> None:
        """Round ``index``: locate and confirm cues on its seeded sample; the pool and the bank become its own."""
        self.last_round = index
        started = time.perf_counter()
        chosen = self.sample_rows(np.random.default_rng([self.seed, index]))
        shifted, grids_tried = False, 1
        harvest = self.harvest(classifier, chosen, index, shifted)
        leads = list(harvest.gate_lead.values())
        if index > 0 and not len(harvest.labels):  # a retry: the cue may sit on a line of the regular grid
            shifted, grids_tried = True, 2
            harvest = self.harvest(classifier, chosen, index, shifted)
            leads += harvest.gate_lead.values()
        best_lead = max(leads, default=None)
        if not len(harvest.labels) and self.config.gate is not None:
            self.searching = best_lead is not None and best_lead >= RETRY_LEAD_SHARE * self.config.gate
        retest_lead: dict[str, float] = {}
        if self.config.gate is not None and len(harvest.labels):
            harvest, retest_lead = self.retest(classifier, harvest, chosen, index, shifted)
        self.pool = Pool(harvest.images, harvest.labels, harvest.sources)
        self.empty_rounds += not len(harvest.labels)
        self.cues, kept = harvest.cues, dict(harvest.counts)
        self.pool_active = True
        self.pool_checked_at = progress if self.config.pool_check and len(self.cues) else math.inf
        if len(self.cues):
            conflicts = natural_conflicts(classifier, self.images, self.labels)
            rows = torch.nonzero(conflicts).flatten()
            self.pool.extend(self.images[rows], self.labels[rows], len(kept))
            kept[CONFLICTS] = int(conflicts.sum())
        self.history.append(RoundLog(
            round(progress, 4), len(chosen), kept, time.perf_counter() - started,
            {label: int(number) for label, number in enumerate(torch.bincount(self.cues.labels).tolist())},
            harvest.gate_lead, retest_lead, grids_tried,
            {label: float(zone.float().mean()) for label, zone in self.cues.zone_of.items()}, best_lead=best_lead))

    def harvest(self, classifier: Classifier, rows: torch.Tensor, index: int, shifted: bool,
                second_sample: bool = False, attacked: int | None = None) -> Harvest:
        """Round ``index``'s ``locate`` on the training images ``rows`` (the first ``attacked`` of them attacked),
        seeded by (seed, round, which sample)."""
        return locate(classifier, self.images[rows], self.labels[rows], self.config.attacks, self.config.budget,
                      self.config.gate, seed=self.seed * 1_000_003 + index + (500_001 if second_sample else 0),
                      shifted=shifted, attacked=attacked)

    def retest(self, classifier: Classifier, harvest: Harvest, rows: torch.Tensor, index: int, shifted: bool
               ) -> tuple[Harvest, dict[str, float]]:
        """The harvest without the marginal classes (``confirm.marginal_classes``) that a second seeded sample of
        as many other training images does not confirm, and that sample's leads. Only the second sample's
        images of the marginal classes are attacked (a class's cues come from its own images); all are
        recipients of the dependence test."""
        leads = harvest.class_leads()
        marginal = marginal_classes(leads, self.config.gate)
        if not marginal:
            return harvest, {}
        second_rows = self.sample_rows(np.random.default_rng([self.seed, index, 1]), excluding=rows)
        of_marginal = torch.isin(self.labels[second_rows], torch.tensor(marginal))
        second_rows = torch.cat([second_rows[of_marginal], second_rows[~of_marginal]])
        attacked = int(of_marginal.sum())
        if attacked == 0:  # no image of a marginal class in the sample: none of its cues confirmed there
            return harvest.restrict([label for label in leads if label not in marginal]), {}
        second = self.harvest(classifier, second_rows, index, shifted, second_sample=True, attacked=attacked)
        kept = settled_classes(leads, second.class_leads(kept_only=False), marginal, self.config.gate)
        return harvest.restrict(kept), second.gate_lead

    def sample_rows(self, rng: np.random.Generator, excluding: torch.Tensor | None = None) -> torch.Tensor:
        """Sorted rows of a seeded ``fraction`` of the training images (at least one, and at most all the rows not
        ``excluding``)."""
        count = max(1, int(round(self.config.fraction * len(self.labels))))
        rows = np.arange(len(self.labels)) if excluding is None else np.setdiff1d(np.arange(len(self.labels)),
                                                                                   excluding.numpy())
        return torch.from_numpy(np.sort(rng.choice(rows, size=min(count, len(rows)), replace=False)))

    def check_pool(self, classifier: Classifier, progress: float) -> None:
        """Measure how the current model reads the bank's cues (``confirm.cue_effects``) on a fresh seeded
        ``fraction`` of the training images; the pool stays in the stream only while a class's cues still push
        images towards it. Every pool source holds a cue on the other side of the label, so a pool kept to the end
        pushes a model that stopped reading the cue on to reading it as the other class's (docs/results.md)."""
        rng = np.random.default_rng([self.seed, len(self.history), round(progress * 1000)])
        sample = self.sample_rows(rng)
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        effects = cue_effects(classifier, self.images[sample].cpu(), self.labels[sample].cpu(),
                              self.cues.at_most(POOL_CHECK_CUES, rng), generator)
        self.pool_active = any(effect > 0 for effect in effects.values())
        self.pool_checked_at = progress
        self.history[-1].pool_checks.append((round(progress, 4), effects, self.pool_active))

    def state(self) -> dict[str, Any]:
        """What a resume needs to continue the loop exactly (``fit`` saves it in every ``last.pt``): the rounds
        done, the bank, the pool and whether it is in the stream."""
        return {"pool": asdict(self.pool), "cues": {"images": self.cues.images, "masks": self.cues.masks,
                                                    "labels": self.cues.labels, "fills": list(self.cues.fills)},
                "history": [asdict(entry) for entry in self.history], "last_round": self.last_round,
                "empty_rounds": self.empty_rounds, "searching": self.searching, "pool_active": self.pool_active,
                "pool_checked_at": self.pool_checked_at}

    def load_state(self, state: dict[str, Any]) -> None:
        cues = state["cues"]
        self.cues = CueBank(cues["images"], cues["masks"], cues["labels"], tuple(cues["fills"]))
        self.pool = Pool(**state["pool"])
        self.history = [RoundLog(**entry) for entry in state["history"]]
        self.last_round, self.empty_rounds = state["last_round"], state["empty_rounds"]
        self.searching = state["searching"]
        self.pool_active, self.pool_checked_at = state["pool_active"], state["pool_checked_at"]

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 classifier: Classifier) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.spread:
            images = spread_cues(self.cues, images, labels, self.config.spread)
        extra = max(1, int(round(self.config.mix_ratio * len(labels)))) if self.config.mix_ratio else 0
        if not len(self.pool) or not extra or not self.pool_active:
            return images, labels
        pool_images, pool_labels = self.pool.draw(extra)
        return torch.cat([images, pool_images.to(images.device)]), torch.cat([labels, pool_labels.to(labels.device)])
