"""The audit's shortcut finder names the cue a model leans on: its class, where it sits, how often it flips
other-class images against a control."""

from __future__ import annotations

import pytest
import torch

from weakspot.augment.adversarial import locate
from weakspot.shortcut_finder import find_shortcuts, findings_figure

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def median_button(monkeypatch):
    """The loop's button attack with its own guidance and margin: the loop's are tuned for 96 px photos."""
    monkeypatch.setitem(locate.LOOP_ATTACK_OPTIONS, "button", {"fills": ("median",)})


def test_the_finder_names_the_button_the_toy_model_decides_by(button_data, button_model, median_button):
    """The toy model calls every image with the dark bottom-centre button class 1: the finder confirms a small
    dark region there for class 1 and no shortcut for class 0, and draws the evidence."""
    _, test, _ = button_data
    findings, cues = find_shortcuts(button_model, test.images, test.labels, per_class=16)
    by_label = {finding.label: finding for finding in findings}
    button, other = by_label[test.class_names[1]], by_label[test.class_names[0]]
    assert button.confirmed and button.lead >= 0.5 and button.cue_flip > button.control_flip
    assert button.zone_share < 0.1
    x, y = button.centre
    assert abs(x - 0.5) < 0.15 and y > 0.66  # the button sits at (0.5, 0.84)
    assert "a shortcut" in button.verdict and "near the bottom-centre" in button.verdict
    assert not other.confirmed and ("no shortcut" in other.verdict or "nothing found" in other.verdict)
    assert button.attacked == other.attacked == 16 and len(cues) == button.spot_cues + other.spot_cues
    figure = findings_figure(button_model, test.images, test.labels, cues, findings)
    assert len(figure.axes) >= 7
