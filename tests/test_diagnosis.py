"""The audit's diagnosis: which kind of weak spot it found and which finetune method it recommends."""

from __future__ import annotations

from weakspot.diagnosis import GroupScore, diagnose


def test_a_confirmed_cue_is_a_local_cue_and_the_loop_serves_it():
    groups = [GroupScore("a", 100, 0.9), GroupScore("b", 100, 0.5)]
    diagnosis = diagnose(["female: a small bright region near the top-left; ..."], groups)
    assert (diagnosis.kind, diagnosis.method) == ("local cue", "adversarial")
    assert "finetune --method adversarial" in diagnosis.line()


def test_a_significant_gap_without_a_cue_is_a_subgroup_gap_for_group_balanced_training_on_its_columns():
    groups = [GroupScore("male, race=asian", 97, 0.62), GroupScore("female, race=white", 97, 0.91),
              GroupScore("male, race=white", 97, 0.80)]
    diagnosis = diagnose([], groups, ["race"])
    assert (diagnosis.kind, diagnosis.method, diagnosis.groups) == ("subgroup gap", "groupbalance", ("race",))
    assert "race=asian at 62%" in diagnosis.reason and "no local cue confirmed" in diagnosis.reason
    assert diagnosis.line().endswith("recommended: weakspot finetune --method groupbalance --groups race")
    assert diagnosis.as_dict()["groups"] == ("race",)


def test_a_gap_inside_the_intervals_or_one_group_is_no_weak_spot():
    assert diagnose([], [GroupScore("a", 20, 0.7), GroupScore("b", 20, 0.85)]).kind == "none"  # intervals overlap
    assert diagnose([], [GroupScore("a", 500, 0.7)]).kind == "none"
    untested = diagnose(None, [GroupScore("a", 500, 0.7), GroupScore("b", 500, 0.7)])
    assert untested.method is None and "not tested" in untested.reason
