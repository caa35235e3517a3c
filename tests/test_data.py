import numpy as np
import pytest
import torch
from PIL import Image

from weakspot.data import load_dataset, load_image_folder, load_manifest, read_image, split_indices
from weakspot.errors import WeakspotError


def test_utkface_manifest_loads_with_label_and_groups(utkface_dir):
    imageset = load_dataset(utkface_dir, size=32, label="gender", groups=["gender", "race"], max_images=300, seed=1)
    assert len(imageset) == 300
    assert imageset.class_names == ["female", "male"]
    assert imageset.images.shape == (300, 3, 32, 32)
    assert 0.0 <= float(imageset.images.min()) and float(imageset.images.max()) <= 1.0
    assert set(imageset.groups["race"]) <= {"white", "black", "asian", "indian", "others"}
    assert all(imageset.class_names[label] == gender for label, gender in zip(imageset.labels.tolist(), imageset.groups["gender"]))


def _folder_with_problems(root):
    rng = np.random.default_rng(0)
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / "cats" / "ok.jpg")
    good = (root / "cats" / "ok.jpg").read_bytes()
    (root / "cats" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "cats" / "empty.jpg").write_bytes(b"")
    rgba = rng.integers(0, 255, (30, 30, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: composited over white
    Image.fromarray(rgba, mode="RGBA").save(root / "dogs" / "alpha.png")
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8), mode="L").save(root / "dogs" / "gray.png")
    Image.fromarray(np.full((20, 20), 65535, dtype=np.uint16)).save(root / "dogs" / "sixteen.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).convert("CMYK").save(root / "dogs" / "cmyk.jpg")


def test_image_folder_skips_corrupt_files_and_converts_modes(tmp_path):
    _folder_with_problems(tmp_path)
    imageset = load_image_folder(tmp_path, size=16)
    assert imageset.class_names == ["cats", "dogs"]
    assert imageset.labels.tolist() == [0, 1, 1, 1, 1]
    assert imageset.images.shape == (5, 3, 16, 16)
    skipped = dict(imageset.skipped)
    assert set(skipped) == {str(tmp_path / "cats" / "truncated.jpg"), str(tmp_path / "cats" / "empty.jpg")}
    assert all(reason.startswith(path) for path, reason in skipped.items())
    alpha = imageset.images[imageset.paths.index(str(tmp_path / "dogs" / "alpha.png"))]
    assert torch.allclose(alpha, torch.ones_like(alpha))
    sixteen = imageset.images[imageset.paths.index(str(tmp_path / "dogs" / "sixteen.png"))]
    assert torch.allclose(sixteen, torch.ones_like(sixteen))


def test_empty_class_is_an_error_before_any_work(tmp_path):
    _folder_with_problems(tmp_path)
    (tmp_path / "birds").mkdir()
    with pytest.raises(WeakspotError, match="birds: class 'birds' is empty"):
        load_image_folder(tmp_path, size=16)


def test_class_with_only_unreadable_images_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "a" / "x.png")
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(WeakspotError, match="class 'b' has no readable image"):
        load_image_folder(tmp_path, size=8)


def test_decompression_bomb_is_skipped(tmp_path, monkeypatch):
    import weakspot.data as data_module

    monkeypatch.setattr(data_module, "MAX_IMAGE_PIXELS", 100)
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(WeakspotError, match="big.png: 20x20 pixels exceeds"):
        read_image(tmp_path / "big.png", 8)


def _manifest(tmp_path, text):
    (tmp_path / "images").mkdir(exist_ok=True)
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "images" / name)
    (tmp_path / "labels.csv").write_text(text)
    return tmp_path / "labels.csv"


def test_manifest_structural_errors_name_the_file_and_line(tmp_path):
    path = _manifest(tmp_path, "file,age,gender\nimages/a.png,3,male\nimages/b.png,4,female\n")
    assert len(load_manifest(path, "gender", ["gender"], size=8)) == 2
    with pytest.raises(WeakspotError, match=r"labels.csv: no column 'race' \(columns: file, age, gender\)"):
        load_manifest(path, "gender", ["race"], size=8)
    _manifest(tmp_path, "file,gender\nimages/a.png,male\nimages/a.png,female\n")
    with pytest.raises(WeakspotError, match="labels.csv:3: duplicate row"):
        load_manifest(path, "gender", size=8)
    _manifest(tmp_path, "file,gender\n../../etc/passwd,male\n")
    with pytest.raises(WeakspotError, match="labels.csv:2: path '../../etc/passwd' leaves the dataset folder"):
        load_manifest(path, "gender", size=8)
    _manifest(tmp_path, "file,gender\nimages/a.png,male\nimages/b.png,robot\n")
    with pytest.raises(WeakspotError, match="unknown label 'robot'"):
        load_manifest(path, "gender", size=8, class_names=["female", "male"])


def test_dataset_path_errors(tmp_path):
    with pytest.raises(WeakspotError, match="nowhere: no such file or directory"):
        load_dataset(tmp_path / "nowhere")
    _manifest(tmp_path, "file,gender\nimages/a.png,male\n")
    with pytest.raises(WeakspotError, match="needs a label column"):
        load_dataset(tmp_path)


def test_splits_are_deterministic_stratified_and_disjoint():
    labels = torch.tensor([0] * 70 + [1] * 30)
    first = split_indices(labels, seed=3)
    again = split_indices(labels, seed=3)
    other = split_indices(labels, seed=4)
    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert not np.array_equal(first["train"], other["train"])
    combined = np.concatenate([first["train"], first["val"], first["test"]])
    assert sorted(combined.tolist()) == list(range(100))
    assert [int((labels[first[name]] == 1).sum()) for name in ("train", "val", "test")] == [21, 4, 5]


def test_a_byte_order_mark_is_not_part_of_the_first_column_or_class(tmp_path):
    from weakspot.arguments import class_names_arg
    from weakspot.data import manifest_columns

    path = _manifest(tmp_path, "")
    path.write_bytes("\ufefffile,gender,cue\r\nimages/a.png,male,x\r\nimages/b.png,female,y\r\n".encode("utf-8"))
    assert manifest_columns(path) == ["file", "gender", "cue"]
    imageset = load_manifest(path, "gender", ["cue"], size=8)
    assert imageset.class_names == ["female", "male"] and imageset.groups["cue"] == ["x", "y"]
    classes = tmp_path / "classes.txt"
    classes.write_bytes("\ufeffcat\ndog\n".encode("utf-8"))
    assert class_names_arg(str(classes)) == ["cat", "dog"]


def test_hidden_folders_and_macosx_are_not_classes_or_images(tmp_path):
    _folder_with_problems(tmp_path)
    for folder in ("__MACOSX/cats", ".git", "dogs/.thumbnails", "dogs/__MACOSX"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("__MACOSX/cats/._ok.jpg", ".git/x.png", "dogs/.thumbnails/t.png", "dogs/__MACOSX/._gray.png",
                 "dogs/._gray.png"):
        (tmp_path / name).write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    imageset = load_image_folder(tmp_path, size=16)
    assert imageset.class_names == ["cats", "dogs"]
    assert len(imageset) == 5 and len(imageset.skipped) == 2  # the two broken cats of _folder_with_problems


def test_unknown_split_values_are_refused_with_the_allowed_ones(tmp_path):
    path = _manifest(tmp_path, "file,gender,split\nimages/a.png,male,train\nimages/b.png,female,holdout\n")
    assert len(load_manifest(path, "gender", size=8)) == 2  # the column is only checked where it is used
    with pytest.raises(WeakspotError, match=r"labels.csv: column 'split' has unknown value\(s\) 'holdout' "
                                            r"\(allowed: train, val, test, clean_test\)"):
        load_manifest(path, "gender", ["split"], size=8)
    _manifest(tmp_path, "file,gender,split\nimages/a.png,male,train\nimages/b.png,female,\n")
    with pytest.raises(WeakspotError, match=r"unknown value\(s\) ''"):
        load_manifest(path, "gender", ["split"], size=8)


def test_a_sample_without_a_class_says_so(tmp_path):
    path = _manifest(tmp_path, "file,gender\nimages/a.png,male\nimages/b.png,female\n")
    with pytest.raises(WeakspotError, match=r"labels.csv: the sample of --max-images 1 holds no image of class"):
        load_manifest(path, "gender", size=8, max_images=1)
    with pytest.raises(WeakspotError, match=r"labels.csv: the data holds no image of class 'cat'"):
        load_manifest(path, "gender", size=8, class_names=["cat", "female", "male"])


@pytest.mark.parametrize("last, message", [("label", "no column 'gender'"), ("c7", "column 'c7' appears twice")])
def test_a_header_of_100k_columns_is_checked_at_once(tmp_path, last, message):
    import time

    header = ",".join(["file", *(f"c{index}" for index in range(100_000)), last])
    path = _manifest(tmp_path, header + "\nimages/a.png" + "," * 100_001 + "\n")
    start = time.perf_counter()
    with pytest.raises(WeakspotError, match=message) as error:
        load_manifest(path, "gender", size=8)
    assert time.perf_counter() - start < 2.0
    assert len(str(error.value)) < 500  # the columns listed, cut short
