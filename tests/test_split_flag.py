"""``--split`` gives evaluators the images ``weakspot train`` held out, cut the same way."""

import argparse

import pytest
import torch

from weakspot.arguments import add_data_arguments, add_runtime_arguments, dataset_from_args
from weakspot.data import split_indices
from weakspot.errors import WeakspotError
from weakspot.shortcut import make_shortcut_dataset, write_imageset


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_data_arguments(parser, split=True)
    add_runtime_arguments(parser)
    return parser.parse_args(list(argv))


def test_split_without_column_is_the_seeded_stratified_cut_of_train(tmp_path):
    imageset, _ = make_shortcut_dataset(40, 16, cue_rate=0.5, seed=0)
    data = write_imageset(imageset, tmp_path / "d", "label")
    whole = dataset_from_args(parse("--data", str(data), "--label", "label", "--size", "16", "--seed", "3"))
    test = dataset_from_args(parse("--data", str(data), "--label", "label", "--size", "16", "--seed", "3",
                                   "--split", "test"))
    expected = split_indices(whole.labels, seed=3)["test"]
    assert test.paths == [whole.paths[i] for i in expected]
    assert torch.equal(test.images, whole.images[torch.as_tensor(expected)])


def test_split_column_of_a_manifest_is_used_and_a_missing_split_is_an_error(tmp_path):
    imageset, _ = make_shortcut_dataset(12, 16, cue_rate=0.5, seed=1)
    imageset.groups["split"] = ["train"] * 8 + ["test"] * 4
    data = write_imageset(imageset, tmp_path / "d", "label")
    test = dataset_from_args(parse("--data", str(data), "--label", "label", "--size", "16", "--split", "test"))
    assert len(test) == 4
    with pytest.raises(WeakspotError, match=r"no 'val' images \(--split\)"):
        dataset_from_args(parse("--data", str(data), "--label", "label", "--size", "16", "--split", "val"))
