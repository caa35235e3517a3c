"""``LoopConfig``: every setting of the adversarial loop a user tunes, with its default, in one place.

The CLI (``weakspot finetune``), the benchmark (``scripts/shortcut_benchmark.py``) and docs/loop.md read their
flags, defaults and help from these fields, so none of them writes a default of its own. Choices that are
settled (how a cue zone is drawn, the attacks' loop options, the retest of a marginal class, the learning
rate's restart) are constants of the stage modules, not settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from weakspot.errors import WeakspotError


def knob(default: Any, flag: str, help: str) -> Any:
    """A ``LoopConfig`` field with its ``weakspot finetune`` flag and help text."""
    return field(default=default, metadata={"flag": flag, "help": help})


@dataclass(frozen=True)
class LoopConfig:
    """The adversarial loop's settings (docs/loop.md says what each does to a run)."""

    attacks: tuple[str, ...] = knob(("button",), "--attacks",
                                    "attacks whose removals locate the cues (button, superpixel, block, ...)")
    budget: int = knob(40, "--budget", "model queries per image and attack in a round")
    fraction: float = knob(0.15, "--fraction", "share of the training images a round attacks")
    warmup: float = knob(1.5, "--adv-warmup",
                         "epochs of plain training before the first round (the model must lean on a cue first)")
    refresh: float = knob(0.5, "--refresh", "epochs between a round that confirmed nothing and its retry")
    rounds: int | None = knob(1, "--rounds", "rounds that keep something ('off': a round every --refresh epochs)")
    gate: float | None = knob(0.15, "--cue-gate",
                              "how much more often a class's cues must flip other-class images than a same-size "
                              "control region does ('off': keep every cue)")
    spread: float = knob(1.0, "--spread",
                         "share of each batch's clean images that get a confirmed cue zone pasted or erased, "
                         "blind to the label (0: no spread)")
    mix_ratio: float = knob(0.5, "--mix-ratio", "pool images added per clean image of a batch (0: no pool)")
    pool_check: float | None = knob(0.25, "--pool-check",
                                    "epochs between checks that the model still reads a cue; the pool leaves the "
                                    "stream once none pushes towards its class ('off': keep it to the end)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "attacks", tuple(self.attacks))
        problems = [
            (not self.attacks, "at least one attack"),
            (not self.budget >= 1, "a budget >= 1"),
            (not 0.0 < self.fraction <= 1.0, "a fraction in (0, 1]"),
            (not (math.isfinite(self.warmup) and self.warmup >= 0), "a warm-up >= 0"),
            (not (math.isfinite(self.refresh) and self.refresh > 0), "a refresh > 0"),
            (self.rounds is not None and not self.rounds >= 1, "rounds >= 1"),
            (self.gate is not None and not -1.0 <= self.gate <= 1.0, "a gate in [-1, 1]"),
            (not 0.0 <= self.spread <= 1.0, "a spread in [0, 1]"),
            (not (math.isfinite(self.mix_ratio) and self.mix_ratio >= 0), "a mix ratio >= 0"),
            (self.pool_check is not None and not (math.isfinite(self.pool_check) and self.pool_check > 0),
             "a pool check > 0"),
        ]
        wanted = [need for failed, need in problems if failed]
        if wanted:
            raise WeakspotError(f"adversarial loop: needs {', '.join(wanted)}")

    @classmethod
    def knobs(cls) -> list[tuple[str, str, Any, str]]:
        """(field name, CLI flag, default, help) of every setting, in order."""
        return [(item.name, item.metadata["flag"], item.default, item.metadata["help"]) for item in fields(cls)]
