"""Perceptual-hash distances of real edits of one photo, and between different products, as markdown tables.

    python scripts/measure_near_dup.py                      # the photos in tests/fixtures
    python scripts/measure_near_dup.py ../shared/data/products/magento_luma ../shared/data/products/grocery_store

For every photo: the distance (bits of 64) to its re-encoded (JPEG quality 55), half-size,
3 % and 6 % cropped copies, and whether its colour layout still matches; for every pair of
different photos: the distance, and at each cap how many pairs `--near-dup` would take for
the same photo (distance within the cap and the same colours). These numbers back the
README's near-duplicate claims and the cap on `--near-dup-distance`.
"""

from __future__ import annotations

import argparse
import io
import itertools
import statistics
from pathlib import Path

from PIL import Image

from qvl_label.pipeline.images import colour_difference, colour_layout, hamming, perceptual_hash
from qvl_label.store.cache import MAX_COLOUR_DIFFERENCE

DEFAULT_FOLDERS = [Path("tests/fixtures/products"), Path("tests/fixtures/catalogue")]
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def signature(image: Image.Image) -> tuple[int, bytes]:
    rgb = image.convert("RGB")
    return perceptual_hash(rgb), colour_layout(rgb)


def reencoded(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def cropped(image: Image.Image, fraction: float) -> Image.Image:
    w, h = image.size
    dx, dy = int(w * fraction), int(h * fraction)
    return image.crop((dx, dy, w - dx, h - dy))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", type=Path, default=DEFAULT_FOLDERS)
    parser.add_argument("--caps", default="4,8,12,16,24,32,64", help="caps to count false matches at")
    parser.add_argument("--show-within", type=int, default=-1, help="list the pairs within this distance")
    args = parser.parse_args()
    photos = sorted(p for folder in args.folders for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)
    edits = {"re-encoded q55": lambda im: reencoded(im, 55), "half size": lambda im: im.resize(
        (max(1, im.width // 2), max(1, im.height // 2))), "3 % crop": lambda im: cropped(im, 0.03),
        "6 % crop": lambda im: cropped(im, 0.06)}  # fmt: skip
    distances: dict[str, list[int]] = {name: [] for name in edits}
    colours_kept: dict[str, int] = dict.fromkeys(edits, 0)
    signatures = []
    for path in photos:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        base_hash, base_layout = signature(image)
        signatures.append((path, base_hash, base_layout))
        for name, edit in edits.items():
            edit_hash, edit_layout = signature(edit(image))
            distances[name].append(hamming(base_hash, edit_hash))
            colours_kept[name] += colour_difference(base_layout, edit_layout) <= MAX_COLOUR_DIFFERENCE

    print(f"photos: {len(photos)} from {', '.join(str(f) for f in args.folders)}")
    print()
    print("| edit of the same photo | min | median | max | colour layout still matches |")
    print("|---|---|---|---|---|")
    for name, values in distances.items():
        print(
            f"| {name} | {min(values)} | {statistics.median(values):g} | {max(values)} "
            f"| {colours_kept[name]} of {len(values)} |"
        )
    pairs = list(itertools.combinations(signatures, 2))
    pair_distances = [hamming(a[1], b[1]) for a, b in pairs]
    print()
    print(f"different photos: {len(pairs)} pairs; distance min {min(pair_distances)}, "
          f"median {statistics.median(pair_distances):g}")  # fmt: skip
    same_bytes = sum(1 for a, b in pairs if a[0].read_bytes() == b[0].read_bytes())
    print(f"of those, {same_bytes} pairs are byte-identical files in two folders (the same photo)")
    for (a, b), d in zip(pairs, pair_distances, strict=True):
        if d <= args.show_within:
            print(f"  {d:2d}  {a[0]}  {b[0]}")
    print()
    print("| cap (bits) | pairs of different photos within the cap | of those, same colours (taken as one photo) |")
    print("|---|---|---|")
    for cap in (int(c) for c in args.caps.split(",")):
        within = [(a, b) for (a, b), d in zip(pairs, pair_distances, strict=True) if d <= cap]
        same_colours = [1 for a, b in within if colour_difference(a[2], b[2]) <= MAX_COLOUR_DIFFERENCE]
        print(f"| {cap} | {len(within)} | {len(same_colours)} |")


if __name__ == "__main__":
    main()
