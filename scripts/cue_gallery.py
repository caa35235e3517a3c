"""Render every planted-shortcut cue family on a few faces as one PNG grid, so the defaults can be judged by
eye (is the cue visible, small, where we meant it?) before any training run.

Columns: the clean image, then each family of ``CUE_FAMILIES`` with its benchmark defaults (the sticker's
position drawn from ``--seed`` as ``weakspot data shortcut`` does); rows: a few aligned UTKFace faces when
``--source`` exists, else procedural images. The PNG is palette-quantised to stay small and written
atomically.

    .venv/bin/python scripts/cue_gallery.py --out docs/cue_families.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from weakspot.cues import CUE_FAMILIES, place_cue
from weakspot.data import load_dataset
from weakspot.fileio import atomic_write
from weakspot.shortcut import make_shortcut_dataset

HEADER = 18  # pixels above each column for its name


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--source", default="../shared/data/utkface", help="face dataset (procedural images if missing)")
    parser.add_argument("--faces", type=int, default=3, help="rows (default 3)")
    parser.add_argument("--size", type=int, default=96, help="image side in pixels, as in the benchmark (default 96)")
    parser.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscaling of each tile (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="picks the faces and the sticker's position")
    return parser.parse_args()


def faces(source: str, count: int, size: int, seed: int) -> torch.Tensor:
    """``count`` images (N, 3, size, size): real faces if ``source`` exists, else procedural scenes."""
    if Path(source).exists():
        return load_dataset(source, size=size, label="gender", max_images=count, seed=seed).images
    return make_shortcut_dataset(count, size, cue_rate=0.0, seed=seed)[0].images


def gallery(images: torch.Tensor, seed: int, scale: int) -> Image.Image:
    """One tile per (image, column): the clean image, then each family pasted on every image."""
    present = torch.ones(images.shape[0], dtype=torch.bool)
    columns = [("clean", images)] + [
        (name, place_cue(cue, seed).paste(images, present, torch.Generator().manual_seed(seed))[0])
        for name, cue in CUE_FAMILIES.items()]
    tile = images.shape[-1] * scale
    canvas = Image.new("RGB", (tile * len(columns), HEADER + tile * images.shape[0]), "white")
    draw = ImageDraw.Draw(canvas)
    for column, (name, pasted) in enumerate(columns):
        draw.text((column * tile + 4, 3), name, fill="black")
        for row, image in enumerate(pasted):
            array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            picture = Image.fromarray(array).resize((tile, tile), Image.NEAREST)
            canvas.paste(picture, (column * tile, HEADER + row * tile))
    return canvas


def main() -> None:
    args = parse_args()
    picture = gallery(faces(args.source, args.faces, args.size, args.seed), args.seed, args.scale)
    quantised = picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    atomic_write(args.out, lambda handle: quantised.save(handle, format="PNG", optimize=True))
    print(f"{args.out}: {picture.width}x{picture.height}, {Path(args.out).stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
