"""Datasets as tensors: images float in [0,1], shape (N, 3, H, W), labels, class names and group attributes.

Two sources: an ImageFolder tree (one folder per class) and a CSV manifest (``file,<label>,<groups...>``).
Structural problems (missing column, duplicate row, path outside the dataset, empty class) stop the run
before any decoding; a single unreadable image is skipped, counted and reported.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from weakspot.arguments import SPLITS
from weakspot.errors import WeakspotError
from weakspot.reading import first_repeated, listing, read_text, regular_file

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
MAX_IMAGE_PIXELS = 50_000_000  # decompression-bomb limit, checked from the header before decoding
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 4096  # side after resizing: a 4096 px float image is already 200 MB
MANIFEST_NAME = "labels.csv"
MANIFEST_WHAT = "CSV manifest"  # the noun of a manifest's errors
SPLIT_COLUMN = "split"  # a manifest column that fixes each image's split: one of SPLITS
CLEAN_TEST = "clean_test"  # the split of a benchmark's test images without the planted cue
LOADER_THREADS = 4
SKIPPED_FOLDERS = frozenset({"__MACOSX"})  # archive metadata (with hidden names): never a class or an image


@dataclass
class ImageSet:
    """Images with their labels; ``groups[attribute][i]`` is image i's value of a subgroup attribute."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    groups: dict[str, list[str]] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageSet:
        index_list = [int(index) for index in indices]
        index_tensor = torch.as_tensor(index_list, dtype=torch.long)
        return ImageSet(
            images=self.images[index_tensor], labels=self.labels[index_tensor], class_names=list(self.class_names),
            groups={name: [values[i] for i in index_list] for name, values in self.groups.items()},
            paths=[self.paths[i] for i in index_list] if self.paths else [],
            source=self.source, skipped=list(self.skipped))

    def group_of(self, index: int, attributes: Sequence[str]) -> dict[str, str]:
        """The subgroup of one image, e.g. ``{"gender": "male", "race": "white"}``."""
        return {attribute: self.groups[attribute][index] for attribute in attributes}


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: 16-bit scaled down, alpha composited over white, CMYK/palette converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / scale * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image) * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def check_image_size(size: int) -> int:
    """Refuse a side that no model can use or that would exhaust memory once every image is resized."""
    if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise WeakspotError(f"image size must be {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels, got {size}")
    return size


def read_image(path: str | Path, size: int) -> torch.Tensor:
    """One image as a float tensor (3, size, size) in [0,1]: resized on the shorter side, centre-cropped.

    Raises ``WeakspotError`` naming the file for anything unreadable.
    """
    return _decode(path, check_image_size(size))


def _decode(path: str | Path, size: int) -> torch.Tensor:
    """``read_image`` without the size check (done once per dataset)."""
    regular_file(path, "image")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise WeakspotError(f"{path}: {width}x{height} pixels exceeds the {MAX_IMAGE_PIXELS:,} pixel limit")
            image.load()
            rgb = ImageOps.fit(_to_rgb(image), (size, size), method=Image.Resampling.BILINEAR)
    except FileNotFoundError:
        raise WeakspotError(f"{path}: image not found") from None
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise WeakspotError(f"{path}: not a readable image ({type(error).__name__})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise WeakspotError(f"{path}: unreadable or truncated image ({error})") from None
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)


def _read_all(paths: Sequence[Path], size: int) -> tuple[list[torch.Tensor | None], list[tuple[str, str]]]:
    """Decode in threads (PIL releases the GIL); failures become (path, reason) rows, not exceptions."""
    check_image_size(size)

    def read_one(path: Path) -> torch.Tensor | str:
        try:
            return _decode(path, size)
        except WeakspotError as error:
            return str(error)

    with ThreadPoolExecutor(max_workers=LOADER_THREADS) as pool:
        results = list(pool.map(read_one, paths))
    skipped = [(str(path), result) for path, result in zip(paths, results) if isinstance(result, str)]
    return [None if isinstance(result, str) else result for result in results], skipped


def _assemble(paths: list[Path], label_names: list[str], groups: dict[str, list[str]], size: int,
              class_names: list[str], source: str, sample_of: int | None) -> ImageSet:
    """Decode the rows and build the ImageSet; every class needs an image (``sample_of``: the rows are the
    seeded sample of ``--max-images``, which may miss a class)."""
    present = set(label_names)
    absent = [name for name in class_names if name not in present]
    if absent:
        sample = f"the sample of --max-images {sample_of}" if sample_of is not None else "the data"
        raise WeakspotError(f"{source}: {sample} holds no image of class '{absent[0]}'")
    tensors, skipped = _read_all(paths, size)
    kept = [i for i, tensor in enumerate(tensors) if tensor is not None]
    if not kept:
        raise WeakspotError(f"{source}: none of the {len(paths)} images could be read (first: {skipped[0][1]})")
    class_index = {name: index for index, name in enumerate(class_names)}
    labels = torch.tensor([class_index[label_names[i]] for i in kept], dtype=torch.long)
    empty = [name for index, name in enumerate(class_names) if not bool((labels == index).any())]
    if empty:
        raise WeakspotError(f"{source}: class '{empty[0]}' has no readable image")
    return ImageSet(
        images=torch.stack([tensors[i] for i in kept]), labels=labels, class_names=class_names,
        groups={name: [values[i] for i in kept] for name, values in groups.items()},
        paths=[str(paths[i]) for i in kept], source=source, skipped=skipped)


def _sample_rows(count: int, max_images: int | None, seed: int) -> list[int]:
    if max_images is None or max_images >= count:
        return list(range(count))
    if max_images <= 0:
        raise WeakspotError(f"max_images must be positive, got {max_images}")
    return sorted(np.random.default_rng(seed).choice(count, size=max_images, replace=False).tolist())


def _skipped_name(name: str) -> bool:
    return name.startswith(".") or name in SKIPPED_FOLDERS


def load_image_folder(root: str | Path, size: int, max_images: int | None = None, seed: int = 0) -> ImageSet:
    """An ImageFolder tree: every sub-folder is a class (sorted by name), every image file in it a sample.
    Hidden files and folders and ``__MACOSX`` (what macOS's archiver and Finder leave) are not looked at."""
    root_path = Path(root)
    if not root_path.is_dir():
        raise WeakspotError(f"{root_path}: not a directory")
    class_dirs = sorted(path for path in root_path.iterdir() if path.is_dir() and not _skipped_name(path.name))
    if not class_dirs:
        raise WeakspotError(f"{root_path}: no class folders (expected one sub-folder per class)")
    paths: list[Path] = []
    label_names: list[str] = []
    for class_dir in class_dirs:
        files = sorted(path for path in class_dir.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES
                       and not any(_skipped_name(part) for part in path.relative_to(class_dir).parts))
        if not files:
            raise WeakspotError(f"{class_dir}: class '{class_dir.name}' is empty (no image files)")
        paths.extend(files)
        label_names.extend([class_dir.name] * len(files))
    rows = _sample_rows(len(paths), max_images, seed)
    class_names = [path.name for path in class_dirs]
    return _assemble([paths[i] for i in rows], [label_names[i] for i in rows],
                     {"class": [label_names[i] for i in rows]}, size, class_names, str(root_path),
                     max_images if len(rows) < len(paths) else None)


def load_manifest(manifest: str | Path, label: str, groups: Sequence[str] = (), size: int = 128,
                  max_images: int | None = None, seed: int = 0, class_names: Sequence[str] | None = None) -> ImageSet:
    """A CSV manifest ``file,<label>,<groups...>``; files are relative to the manifest's folder and may not
    leave it. Every structural problem is reported with the manifest's name and line before decoding."""
    manifest_path = Path(manifest)
    root = manifest_path.parent.resolve()
    text = read_text(manifest_path, MANIFEST_WHAT)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = reader.fieldnames or []
        rows = list(reader)
    except csv.Error as error:
        raise WeakspotError(f"{manifest_path}: not a readable {MANIFEST_WHAT} ({error})") from None
    if not columns:
        raise WeakspotError(f"{manifest_path}: empty manifest (no header)")
    repeated = first_repeated(columns)
    if repeated is not None:
        raise WeakspotError(f"{manifest_path}: column '{repeated}' appears twice in the header")
    present = set(columns)
    for column in ["file", label, *groups]:
        if column not in present:
            raise WeakspotError(f"{manifest_path}: no column '{column}' (columns: {listing(columns)})")
    if not rows:
        raise WeakspotError(f"{manifest_path}: no rows")
    if SPLIT_COLUMN in groups:
        _check_splits(manifest_path, [(row[SPLIT_COLUMN] or "").strip() for row in rows])
    paths: list[Path] = []
    seen: dict[Path, int] = {}
    for line_number, row in enumerate(rows, start=2):
        relative = (row["file"] or "").strip()
        if not relative:
            raise WeakspotError(f"{manifest_path}:{line_number}: empty 'file'")
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            raise WeakspotError(f"{manifest_path}:{line_number}: path '{relative}' leaves the dataset folder")
        if path in seen:
            raise WeakspotError(f"{manifest_path}:{line_number}: duplicate row for '{relative}' (first on line {seen[path]})")
        seen[path] = line_number
        if not (row[label] or "").strip():
            raise WeakspotError(f"{manifest_path}:{line_number}: empty label '{label}'")
        paths.append(path)
    label_names = [row[label].strip() for row in rows]
    if class_names is None:
        class_names = sorted(set(label_names))
    else:
        unknown = sorted(set(label_names) - set(class_names))
        if unknown:
            raise WeakspotError(f"{manifest_path}: unknown label '{unknown[0]}' (classes: {', '.join(class_names)})")
    selected = _sample_rows(len(rows), max_images, seed)
    group_values = {name: [(rows[i][name] or "").strip() for i in selected] for name in groups}
    return _assemble([paths[i] for i in selected], [label_names[i] for i in selected], group_values, size,
                     list(class_names), str(manifest_path),
                     max_images if len(selected) < len(rows) else None)


def _check_splits(manifest_path: Path, values: list[str]) -> None:
    """Every row's ``split`` value is one of SPLITS: a row of another split would silently be in none."""
    unknown = sorted(set(values) - set(SPLITS))
    if unknown:
        named = ", ".join(repr(value) for value in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise WeakspotError(f"{manifest_path}: column '{SPLIT_COLUMN}' has unknown value(s) {named} "
                            f"(allowed: {', '.join(SPLITS)})")


def load_dataset(path: str | Path, size: int = 128, label: str | None = None, groups: Sequence[str] = (),
                 max_images: int | None = None, seed: int = 0) -> ImageSet:
    """A folder with ``labels.csv`` or a ``.csv`` file is a manifest (needs ``label``); any other folder is an
    ImageFolder tree."""
    source = Path(path)
    manifest = source / MANIFEST_NAME if source.is_dir() else source
    if source.suffix.lower() == ".csv" or (source.is_dir() and manifest.exists()):
        if label is None:
            raise WeakspotError(f"{manifest}: a manifest needs a label column (--label)")
        return load_manifest(manifest, label, groups, size=size, max_images=max_images, seed=seed)
    if not source.exists():
        raise WeakspotError(f"{source}: no such file or directory")
    if groups:
        raise WeakspotError(f"{source}: group attributes need a CSV manifest; an ImageFolder tree has none")
    return load_image_folder(source, size, max_images=max_images, seed=seed)


def manifest_columns(path: str | Path) -> list[str]:
    """The header of a CSV manifest (a ``.csv`` file or a folder with ``labels.csv``); [] for an ImageFolder."""
    source = Path(path)
    manifest = source / MANIFEST_NAME if source.is_dir() else source
    if manifest.suffix.lower() != ".csv" or not manifest.exists():
        return []
    try:
        return next(csv.reader(io.StringIO(read_text(manifest, MANIFEST_WHAT), newline="")), [])
    except csv.Error:
        return []  # the load that follows reports it


def align_labels(imageset: ImageSet, class_names: Sequence[str]) -> torch.Tensor:
    """``imageset``'s labels re-indexed to a model's class order. The data may hold only some of the
    model's classes (a test set of one class); a label the model does not know is an error."""
    unknown = [name for name in imageset.class_names if name not in class_names]
    if unknown:
        raise WeakspotError(f"{imageset.source}: unknown label '{unknown[0]}' (the model's classes: "
                            f"{', '.join(class_names)})")
    mapping = torch.tensor([list(class_names).index(name) for name in imageset.class_names])
    return mapping[imageset.labels]


def split_indices(labels: torch.Tensor | np.ndarray | Sequence[int], seed: int = 0,
                  fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                  strata: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Deterministic stratified train/val/test indices: each stratum (label, or ``strata`` keys) is shuffled
    with ``seed`` and cut by ``fractions``."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise WeakspotError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    keys = list(strata) if strata is not None else [str(int(label)) for label in np.asarray(labels)]
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for key in sorted(set(keys)):
        members = np.array([i for i, value in enumerate(keys) if value == key])
        members = members[rng.permutation(len(members))]
        n_train = int(round(fractions[0] * len(members)))
        n_val = int(round(fractions[1] * len(members)))
        parts["train"].extend(members[:n_train].tolist())
        parts["val"].extend(members[n_train:n_train + n_val].tolist())
        parts["test"].extend(members[n_train + n_val:].tolist())
    return {name: np.array(sorted(indices), dtype=np.int64) for name, indices in parts.items()}
