"""docs/loop.md's settings table is the LoopConfig's: every field with its flag and default, and no other."""

from __future__ import annotations

import re
from pathlib import Path

from weakspot.augment.adversarial import LoopConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "loop.md"


def test_the_loop_page_lists_every_setting_with_its_flag_and_default():
    rows = re.findall(r"^\| `(--[a-z-]+)` \| `(\w+)` \| ([^|]+) \|", DOC.read_text(encoding="utf-8"), re.MULTILINE)
    expected = [(flag, name, "off" if default is None else ",".join(default) if isinstance(default, tuple)
                 else str(default)) for name, flag, default, _ in LoopConfig.knobs()]
    assert [(flag, name, shown.strip()) for flag, name, shown in rows] == expected
    assert len(expected) <= 12
