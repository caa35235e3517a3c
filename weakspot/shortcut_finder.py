"""The audit's shortcut finder: name the local cues a model leans on, with the evidence a person can check.

It runs the adversarial loop's first two stages on the audited model: ``locate`` (an explainer-guided attack
round whose erased regions, pasted into another class, fool the model too) and ``confirm`` (the dependence
test: a class's cues must flip other-class images more often than the same pixels pasted elsewhere, by at least
the gate). A region that flips a few images may be real evidence (a lock of long hair); a shortcut flips most
of them wherever it comes from. Each class gets a ``Finding``: its cues, where they sit, how often they flip
other-class images against the control, and a one-line verdict; ``findings_figure`` draws the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from weakspot.augment.adversarial import LoopConfig
from weakspot.augment.adversarial.confirm import flip_shares, marginal_classes, settled_classes
from weakspot.augment.adversarial.cues import CueBank, draw_at_most
from weakspot.augment.adversarial.locate import locate
from weakspot.classifier import Classifier
from weakspot.fills import apply_masks

FINDER_IMAGES = 120  # images of each class attacked: enough cues for a zone, a few minutes at 224 px
SMALL_ZONE = 0.06  # share of the image under which a hot spot is "small"
LOOK_MARGIN = 0.15  # brightness (0-1) by which a hot spot is "dark" or "bright" against the rest of its images
SPOT_SHARE = 0.5  # a hot spot's pixels are at least this share as covered by cues as the most covered one
GALLERY_EXAMPLES = 3  # before/after pairs per class in the figure


@dataclass
class Finding:
    """What the finder says of one class's cues (shares of transplants; the zone's centre as x, y fractions)."""

    label: str
    attacked: int  # images of the class attacked
    cues: int  # erased regions whose transplant fooled the model
    spot_cues: int  # those that touch the class's hot spot (``hot_spot``): the ones tested
    cue_flip: float | None  # share of other-class recipients the cues flip
    control_flip: float | None  # the same pixels pasted elsewhere
    lead: float | None  # cue_flip - control_flip
    recipients: int
    confirmed: bool  # lead >= gate: a shortcut
    zone_share: float | None  # share of the image the hot spot covers
    centre: tuple[float, float] | None
    look: str | None  # "dark", "bright" or None: the hot spot against the rest of its images
    verdict: str
    covers: str | None = None  # the class whose stronger cue this class's regions cover (``_covered_cue``)
    retest_lead: float | None = None  # the lead on a second sample, when the first passed by under twice the gate


def _place(centre: tuple[float, float]) -> str:
    """"the top-left", "the centre", "the bottom-centre"... of the image."""
    column = ("left", "centre", "right")[min(2, int(centre[0] * 3))]
    row = ("top", "middle", "bottom")[min(2, int(centre[1] * 3))]
    if row == "middle":
        return "the centre" if column == "centre" else f"the {column}"
    return f"the {row}-{column}"


def _look(cues: CueBank, spot: torch.Tensor) -> str | None:
    """Whether the hot spot is "dark" or "bright" in its cues' donors against the rest of those images, or None."""
    brightness = cues.images.mean(dim=1)  # (n, H, W)
    inside, outside = float(brightness[:, spot].mean()), float(brightness[:, ~spot].mean())
    return "dark" if inside < outside - LOOK_MARGIN else "bright" if inside > outside + LOOK_MARGIN else None


def _verdict(finding: Finding, others: str, gate: float) -> str:
    if not finding.cues:
        return f"{finding.label}: nothing found: no erased region of {finding.attacked} images fooled the model " \
               f"when pasted into {others} images"
    if finding.lead is None:
        return f"{finding.label}: {finding.cues} regions found, none tested: no {others} image the model gets right"
    size = "small " if finding.zone_share is not None and finding.zone_share < SMALL_ZONE else ""
    look = f"{finding.look} " if finding.look else ""
    region = (f"a {size}{look}region ({finding.zone_share:.0%} of the image) near {_place(finding.centre)}, "
              f"{finding.spot_cues} of the {finding.cues} regions found")
    flips = (f"pasted into {finding.recipients} {others} images it flips {finding.cue_flip:.0%}, the control "
             f"{finding.control_flip:.0%}")
    if finding.covers:
        return (f"{finding.label}: {region}; {flips}: where {finding.covers}'s cue sits, so it flips images by "
                f"covering that cue (lead {finding.lead:.2f})")
    leads = f"lead {finding.lead:.2f}" + ("" if finding.retest_lead is None else
                                          f", {finding.retest_lead:.2f} on a second sample")
    if finding.confirmed:
        return f"{finding.label}: {region}; {flips}: a shortcut ({leads}; gate {gate:.2f})"
    return f"{finding.label}: no shortcut: the regions found ({region}) are under the gate {gate:.2f} ({leads}); {flips}"


@dataclass
class _Sample:
    """One attack round of the finder: the images attacked per class, the cues found, each class's hot spot and
    the flip shares of its cues."""

    chosen: list[torch.Tensor]
    cues: CueBank
    spots: dict[int, tuple[torch.Tensor | None, CueBank]]
    spot_cues: CueBank  # every class's cues at its hot spot: the ones tested
    shares: dict[int, tuple[torch.Tensor, torch.Tensor, int]]

    def lead(self, label: int) -> float | None:
        cue, control, _ = self.shares.get(label, (None, None, 0))
        return None if cue is None else float(cue - control)


def _sample(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, classes: list[int], per_class: int,
            config: LoopConfig, seed: int, excluding: torch.Tensor | None = None) -> _Sample:
    """Attack at most ``per_class`` seeded images of each of ``classes`` (not ``excluding``); every image is a
    recipient of the transplants and of the dependence test."""
    rng = np.random.default_rng(seed)
    free = torch.ones(len(labels), dtype=torch.bool)
    if excluding is not None:
        free[excluding] = False
    chosen = [torch.from_numpy(draw_at_most(torch.nonzero((labels == label) & free).flatten().numpy(), per_class,
                                            rng)) for label in classes]
    attacked = torch.cat(chosen)
    order = torch.cat([attacked, torch.from_numpy(np.setdiff1d(np.arange(len(labels)), attacked.numpy()))])
    harvest = locate(classifier, images[order], labels[order], config.attacks, config.budget, gate=None, seed=seed,
                     attacked=len(attacked))
    spots = {label: hot_spot(harvest.cues.select(harvest.cues.labels == label)) for label in classes}
    bank = CueBank.concat([CueBank.empty(images), *(spot_cues for _, spot_cues in spots.values())])
    shares = flip_shares(classifier, images, labels, bank, torch.Generator().manual_seed(seed))
    return _Sample(chosen, harvest.cues, spots, bank, shares)


def find_shortcuts(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor,
                   per_class: int = FINDER_IMAGES, config: LoopConfig = LoopConfig(), seed: int = 0
                   ) -> tuple[list[Finding], CueBank]:
    """One finding per class present, from an attack round on at most ``per_class`` seeded images of each class
    with the loop's attacks and budget, its dependence test run on the cues at the class's hot spot against the
    loop's gate; and those cues, for ``findings_figure``. As in the loop, a class that passes by less than twice
    the gate is tested again on a second sample of other images and kept only when the two leads average the
    gate (``confirm.settled_classes``)."""
    images, labels = images.cpu(), labels.cpu()
    present = labels.unique().tolist()
    first = _sample(classifier, images, labels, present, per_class, config, seed)
    gate = config.gate if config.gate is not None else 0.0
    leads = {label: lead for label in present if (lead := first.lead(label)) is not None and lead >= gate}
    marginal = marginal_classes(leads, gate)
    second_leads: dict[int, float] = {}
    if marginal:
        second = _sample(classifier, images, labels, marginal, per_class, config, seed + 1,
                         excluding=torch.cat(first.chosen))
        second_leads = {label: lead for label in marginal if (lead := second.lead(label)) is not None}
    confirmed = settled_classes(leads, second_leads, marginal, gate)
    findings = [_finding(classifier, first, label, rows, label in confirmed, second_leads.get(label))
                for label, rows in zip(present, first.chosen)]
    for label, finding in zip(present, findings):
        others = "/".join(classifier.class_names[other] for other in present if other != label) or "other"
        finding.covers = _covered_cue(label, finding, present, findings, first.spots)
        finding.verdict = _verdict(finding, others, gate)
    return findings, first.spot_cues


def _finding(classifier: Classifier, sample: _Sample, label: int, rows: torch.Tensor, confirmed: bool,
             retest_lead: float | None) -> Finding:
    spot, spot_cues = sample.spots[label]
    cue, control, recipients = sample.shares.get(label, (None, None, 0))
    centre = None
    if spot is not None:
        ys, xs = torch.nonzero(spot, as_tuple=True)
        centre = (float(xs.float().mean() + 0.5) / spot.shape[1], float(ys.float().mean() + 0.5) / spot.shape[0])
    return Finding(classifier.class_names[label], len(rows), int((sample.cues.labels == label).sum()), len(spot_cues),
                   None if cue is None else float(cue), None if control is None else float(control),
                   sample.lead(label), recipients, confirmed, None if spot is None else float(spot.float().mean()),
                   centre, _look(spot_cues, spot) if len(spot_cues) else None, "", retest_lead=retest_lead)


def _covered_cue(label: int, finding: Finding, present: list[int], findings: list[Finding],
                 spots: dict[int, tuple[torch.Tensor | None, CueBank]]) -> str | None:
    """The class whose confirmed cue sits where this class's does and leads by more: this class's regions then
    flip images by covering that cue, the same shortcut seen from the other side."""
    spot = spots[label][0]
    for other, other_finding in zip(present, findings):
        other_spot = spots[other][0]
        if (other != label and finding.confirmed and other_finding.confirmed and other_finding.lead > finding.lead
                and spot is not None and other_spot is not None and bool((spot & other_spot).any())):
            return other_finding.label
    return None


def hot_spot(cues: CueBank) -> tuple[torch.Tensor | None, CueBank]:
    """Where one class's cues pile up (the pixels at least half as covered as the most covered one, by two cues
    or more) and the cues that touch it. A shortcut is the same region in many images; the class's other
    cues, scattered over the image, would dilute the dependence test of the one the model leans on."""
    if not len(cues):
        return None, cues
    count = cues.masks.float().sum(dim=0)
    spot = (count >= SPOT_SHARE * count.max()) & (count >= min(2.0, float(count.max())))
    return spot, cues.select((cues.masks & spot).flatten(1).any(dim=1))


def findings_figure(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, bank: CueBank,
                    findings: list[Finding], seed: int = 0) -> Figure:
    """One row per class with cues: where its cues sit (their cover over the mean donor image), then a few images
    of another class before and after one of its cues is pasted in, titled with the model's probability of the
    cue's class. The evidence behind each verdict, for a person to judge (a real feature or a shortcut)."""
    import matplotlib.pyplot as plt

    rows = [finding for finding in findings if finding.spot_cues]
    columns = 1 + 2 * GALLERY_EXAMPLES
    figure, axes = plt.subplots(max(1, len(rows)), columns, figsize=(2.2 * columns, 2.5 * max(1, len(rows))),
                                squeeze=False)
    for axis in axes.flatten():
        axis.axis("off")
    if not rows:
        axes[0, 0].set_title("no cue found")
        return figure
    images, labels = images.cpu(), labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    for row, finding in enumerate(rows):
        label = list(classifier.class_names).index(finding.label)
        of_class = bank.select(bank.labels == label)
        cover = of_class.masks.float().mean(dim=0).numpy()
        axes[row, 0].imshow(of_class.images.mean(dim=0).permute(1, 2, 0).clamp(0, 1).numpy())
        axes[row, 0].imshow(cover, cmap="jet", alpha=0.5, vmin=0.0, vmax=max(float(cover.max()), 1e-6))
        lead = "untested" if finding.lead is None else f"lead {finding.lead:+.2f}"
        axes[row, 0].set_title(f"{finding.label}: {finding.spot_cues} cues here\n{lead}", fontsize=8)
        others = torch.nonzero(labels != label).flatten()
        picked = others[torch.randperm(len(others), generator=generator)[:GALLERY_EXAMPLES]]
        cues = torch.randint(len(of_class), (len(picked),), generator=generator)
        pasted = apply_masks(images[picked], of_class.masks[cues], of_class.images[cues])
        before = classifier.predict_proba(images[picked])[:, label].cpu()
        after = classifier.predict_proba(pasted)[:, label].cpu()
        for example in range(len(picked)):
            for offset, picture, probability, title in ((1, images[picked[example]], before[example], "before"),
                                                        (2, pasted[example], after[example], "cue pasted")):
                axis = axes[row, 2 * example + offset]
                axis.imshow(picture.permute(1, 2, 0).clamp(0, 1).numpy())
                axis.set_title(f"{title}\np({finding.label}) {float(probability):.0%}", fontsize=8)
    figure.tight_layout()
    return figure
