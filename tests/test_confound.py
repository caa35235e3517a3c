"""Attribute-confound benchmarks (``weakspot data confound``): the label goes with an attribute in train and val,
not in test, and the folder reads like a planted-shortcut one."""

from __future__ import annotations

import csv
from collections import Counter

import pytest
import torch

from weakspot.cli import main
from weakspot.confound import Attribute, confounded_rows, parse_attribute
from weakspot.data import ImageSet, load_dataset
from weakspot.shortcut import write_imageset


def test_confounded_rows_keep_the_share_in_each_class():
    import numpy as np

    labels = np.array([0] * 100 + [1] * 100)
    holds = np.array([True] * 50 + [False] * 50 + [True] * 40 + [False] * 60)
    rows = confounded_rows(labels, holds, {0: 0.9, 1: 0.1}, np.random.default_rng(0))
    kept0, kept1 = rows[labels[rows] == 0], rows[labels[rows] == 1]
    assert holds[kept0].mean() == pytest.approx(0.9, abs=0.02) and len(kept0) == 56  # 50 with it / 0.9, rounded
    assert holds[kept1].mean() == pytest.approx(0.1, abs=0.02) and len(kept1) == 67  # 60 without it / 0.9
    assert len(set(rows.tolist())) == len(rows)


def test_parse_attribute_takes_a_value_set_a_bound_or_brightness():
    assert parse_attribute("race=white,asian") == Attribute("race=white,asian", "race", values=("white", "asian"))
    assert parse_attribute("age<30").below == 30.0 and parse_attribute("brightness").column is None
    for text in ("race=", "age<old", "nothing"):
        with pytest.raises(Exception, match="expected brightness"):
            parse_attribute(text)


@pytest.fixture
def toned_source(tmp_path):
    """A two-class folder with a ``tone`` column, half of each class 'dark', and an age column."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 2
    imageset = ImageSet(images=torch.rand(400, 3, 16, 16, generator=generator), labels=labels, class_names=["a", "b"],
                        groups={"tone": ["dark" if (i // 2) % 2 else "light" for i in range(400)],
                                "age": [str(i % 60) for i in range(400)]}, paths=[], source="toned")
    return write_imageset(imageset, tmp_path / "source", label="kind")


def test_data_confound_writes_a_benchmark_grouped_by_the_attribute(tmp_path, toned_source):
    out = tmp_path / "bench"
    assert main(["data", "confound", "--source", str(toned_source), "--label", "kind", "--attribute", "tone=dark",
                 "--rate", "0.9", "--size", "16", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "labels.csv").open()))
    counts = Counter((row["split"], row["kind"], row["cue"]) for row in rows)
    for split in ("train", "val"):  # class b goes with the attribute, class a against it
        assert counts[(split, "b", "tone=dark")] / (counts[(split, "b", "tone=dark")] + counts[(split, "b", "none")]) \
            == pytest.approx(0.9, abs=0.05)
        assert counts[(split, "a", "tone=dark")] / (counts[(split, "a", "tone=dark")] + counts[(split, "a", "none")]) \
            == pytest.approx(0.1, abs=0.05)
    assert counts[("test", "a", "tone=dark")] == counts[("test", "a", "none")] > 0
    assert {row["split"] for row in rows} == {"train", "val", "test"}  # nothing planted: no clean_test
    loaded = load_dataset(out, size=16, label="kind", groups=["cue", "split"])
    assert len(loaded) == len(rows)
    assert main(["data", "confound", "--source", str(toned_source), "--label", "kind", "--attribute", "age<30",
                 "--size", "16", "--out", str(tmp_path / "young")]) == 0
    assert main(["data", "confound", "--source", str(toned_source), "--label", "kind", "--attribute", "brightness",
                 "--size", "16", "--out", str(tmp_path / "bright")]) == 0


def test_data_confound_refuses_what_it_cannot_build(tmp_path, toned_source, capsys):
    base = ["data", "confound", "--source", str(toned_source), "--label", "kind", "--size", "16"]
    assert main([*base, "--attribute", "hair=red", "--out", str(tmp_path / "x")]) == 2
    assert "no column 'hair'" in capsys.readouterr().err
    assert main([*base, "--attribute", "tone<3", "--out", str(tmp_path / "y")]) == 2
    assert "not numeric" in capsys.readouterr().err
    assert main([*base, "--attribute", "tone=dark", "--rate", "1", "--out", str(tmp_path / "z")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
