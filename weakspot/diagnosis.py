"""What kind of weak spot an audit found, and which ``weakspot finetune`` method serves it.

Three kinds, tested in this order:

- **local cue**: the shortcut finder confirmed a region the model leans on (its flip share beat the control's by
  the loop's gate). The loop (``--method adversarial``) finds and removes such cues itself.
- **subgroup gap**: no local cue, but the weakest subgroup (class x the audit's groups) is significantly behind
  the strongest: the 95% Wilson intervals of their clean accuracies do not overlap. Such a gap has no region to
  erase (an attribute, a tint, a background, too few images of a kind), so the loop would confirm nothing.
  Group-balanced training on the audited columns (``--method groupbalance --groups ...``) serves it where the
  training images carry those columns: on attribute confounds it gained 11-20 points of worst group, where the
  label-free AFR and JTT gained nothing or lost (docs/results.md).
- **none**: neither.

The recommendation is a starting point, not a measured guarantee for every data set: docs/audit.md says what each
method was measured on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from weakspot.stats import wilson

RECOMMENDED = {"local cue": "adversarial", "subgroup gap": "groupbalance", "none": None}


@dataclass(frozen=True)
class GroupScore:
    name: str
    n: int
    accuracy: float


@dataclass(frozen=True)
class Diagnosis:
    kind: str  # "local cue", "subgroup gap" or "none"
    method: str | None  # the ``weakspot finetune --method`` that serves it
    reason: str  # one line a person can read
    groups: tuple[str, ...] = ()  # the columns a group-balanced method is told (``--groups``)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        told = f" --groups {','.join(self.groups)}" if self.groups else ""
        advice = f"; recommended: weakspot finetune --method {self.method}{told}" if self.method else ""
        return f"weak spot: {self.kind} ({self.reason}){advice}"


def diagnose(confirmed_cues: Sequence[str] | None, groups: Sequence[GroupScore],
             columns: Sequence[str] = ()) -> Diagnosis:
    """The kind of weak spot from the finder's confirmed verdicts (None: the finder did not run) and each
    subgroup's clean accuracy on the audited images, whose group ``columns`` a subgroup gap's method is told."""
    if confirmed_cues:
        return Diagnosis("local cue", RECOMMENDED["local cue"], confirmed_cues[0])
    scored = [group for group in groups if group.n > 0]
    if len(scored) >= 2:
        worst = min(scored, key=lambda group: group.accuracy)
        best = max(scored, key=lambda group: group.accuracy)
        worst_high, best_low = wilson(worst.accuracy, worst.n)[1], wilson(best.accuracy, best.n)[0]
        if worst_high < best_low:
            return Diagnosis("subgroup gap", RECOMMENDED["subgroup gap"],
                             f"{worst.name} at {worst.accuracy:.0%} of {worst.n} images against {best.name} at "
                             f"{best.accuracy:.0%} of {best.n}, the 95% intervals apart"
                             + ("" if confirmed_cues is not None else "; local cues not tested (--no-shortcuts)")
                             + ("" if confirmed_cues is None else "; no local cue confirmed"), tuple(columns))
    tested = "no local cue confirmed" if confirmed_cues is not None else "local cues not tested (--no-shortcuts)"
    return Diagnosis("none", None, f"{tested}, and no subgroup significantly behind another")
