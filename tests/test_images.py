"""Awkward real-world files: every one becomes upright sRGB pixels within the budget, or a named error."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qvl_label.pipeline.images import ImageLoadError, LoadedImage, budget_size, load_image

from .conftest import AWKWARD, PRODUCTS


def _pixels(loaded: LoadedImage) -> np.ndarray:
    p = loaded.prepared
    return np.asarray(Image.frombytes("RGB", (p.width, p.height), p.rgb), dtype=np.float32)


@pytest.mark.parametrize(
    "name",
    [
        "cmyk_small_pillow.jpg",
        "cmyk_with_profile.jpg",
        "exif_orientation_6.webp",
        "png16_rgb_900x600.png",
        "png16_grey_alpha.png",
        "grey_alpha.png",
        "gif_transparent.gif",
        "gif_animated_no_trailer.gif",
        "webp_alpha.webp",
        "lossless_jpeg_sof3.jpg",
        "giant_20000x14000_gray.jpg",
        "rgba_black_on_transparent_2048x1536.png",
    ],
)
def test_awkward_files_load_within_budget(name: str) -> None:
    loaded = load_image(AWKWARD / name, 8, 256)
    p = loaded.prepared
    assert len(p.rgb) == p.width * p.height * 3
    assert p.width % 32 == 0 and p.height % 32 == 0
    assert (p.width // 32) * (p.height // 32) <= 256
    assert len(loaded.sha256) == 64


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("truncated.png", "truncated"),
        ("truncated_photo.jpg", "truncated"),
        ("corrupt_header.jpg", "corrupt"),
        ("broken_ihdr.png", "not_an_image"),
        ("bomb_65536x65536.png", "too_large"),
    ],
)
def test_broken_files_are_named_errors(name: str, kind: str) -> None:
    with pytest.raises(ImageLoadError) as info:
        load_image(AWKWARD / name, 8, 256)
    assert info.value.kind == kind
    assert info.value.sha256 is not None  # the bytes were read: the record can still name the file


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotation_gives_the_upright_photo(orientation: int) -> None:
    upright = _pixels(load_image(AWKWARD / "exif_orientation_1_landscape.jpg", 64, 256))
    rotated_file = load_image(AWKWARD / f"exif_orientation_{orientation}_landscape.jpg", 64, 256)
    assert "exif_rotated" in rotated_file.notes
    assert (rotated_file.width, rotated_file.height) == (600, 450)
    rotated = _pixels(rotated_file)
    assert rotated.shape == upright.shape
    same = np.abs(rotated - upright).mean()
    turned = np.abs(np.rot90(rotated, 2) - upright).mean()
    # the visible digit differs between the fixtures; the scene itself must line up
    assert same < 25 and same < turned


def test_cmyk_colours_are_not_inverted() -> None:
    loaded = load_image(AWKWARD / "cmyk_with_profile.jpg", 64, 256)
    pixels = _pixels(loaded)
    assert "icc_converted" in loaded.notes
    _red, green, blue = pixels.reshape(-1, 3).mean(axis=0)
    # a park scene in daylight: mid-tones with green the strongest; inverted CMYK gives a dark magenta cast
    assert 80 < green < 200 and green >= blue


def test_transparency_goes_on_white_not_black() -> None:
    pixels = _pixels(load_image(AWKWARD / "rgba_black_on_transparent_2048x1536.png", 64, 256))
    assert pixels.mean() > 200  # mostly white page
    assert pixels.min() < 60  # the black handwriting is still there


def test_giant_jpeg_is_decoded_at_reduced_size() -> None:
    loaded = load_image(AWKWARD / "giant_20000x14000_gray.jpg", 64, 576)
    assert "draft_decoded" in loaded.notes
    assert (loaded.width, loaded.height) == (20000, 14000)


def test_tiny_image_is_upscaled_to_the_minimum(tmp_path: Path) -> None:
    path = tmp_path / "thumb.jpg"
    Image.new("RGB", (10, 8), (200, 30, 30)).save(path)
    loaded = load_image(path, 64, 576)
    assert (loaded.width, loaded.height) == (10, 8)
    assert (loaded.prepared.width // 32) * (loaded.prepared.height // 32) >= 64


def test_file_system_failures(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n")
    broken = tmp_path / "broken.jpg"
    broken.symlink_to(tmp_path / "gone.jpg")
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    cases = {
        empty: "empty_file",
        text: "not_an_image",
        broken: "unreadable",
        loop: "unreadable",
        tmp_path: "unreadable",
        tmp_path / "missing.jpg": "not_found",
    }
    if os.geteuid() != 0:  # root reads everything
        locked = tmp_path / "locked.jpg"
        locked.write_bytes((PRODUCTS / "ms04-red_main.jpg").read_bytes())
        locked.chmod(0)
        cases[locked] = "unreadable"
    for path, kind in cases.items():
        with pytest.raises(ImageLoadError) as info:
            load_image(path, 8, 64)
        assert info.value.kind == kind, path


def test_non_ascii_file_names(tmp_path: Path) -> None:
    target = tmp_path / "连衣裙 红色.jpg"
    target.write_bytes((PRODUCTS / "ms04-red_main.jpg").read_bytes())
    assert load_image(target, 8, 64).format == "JPEG"


@pytest.mark.parametrize(("w", "h"), [(10, 8), (1274, 1580), (4160, 870), (20000, 14000), (32, 5000), (768, 768)])
@pytest.mark.parametrize(("lo", "hi"), [(8, 64), (64, 64), (64, 576), (256, 4096)])
def test_budget_size(w: int, h: int, lo: int, hi: int) -> None:
    bw, bh = budget_size(w, h, lo, hi)
    tokens = (bw // 32) * (bh // 32)
    assert bw % 32 == 0 and bh % 32 == 0 and bw >= 32 and bh >= 32
    assert lo <= tokens <= hi
    if w * h >= lo * 1024 and max(w, h) / min(w, h) < 10:
        assert tokens >= lo * 0.6
    if max(w, h) / min(w, h) < 10:
        assert abs(bw / bh - w / h) / (w / h) < 0.35


def test_generated_multi_frame_formats_use_the_first_frame(tmp_path: Path) -> None:
    red, blue = Image.new("RGB", (64, 48), (220, 20, 20)), Image.new("RGB", (64, 48), (20, 20, 220))
    red.save(tmp_path / "pair.mpo", "MPO", save_all=True, append_images=[blue])
    red.save(tmp_path / "anim.webp", "WEBP", save_all=True, append_images=[blue], duration=100, lossless=True)
    for name in ("pair.mpo", "anim.webp"):
        loaded = load_image(tmp_path / name, 8, 64)
        assert "first_frame" in loaded.notes, name
        r, _g, b = _pixels(loaded).reshape(-1, 3).mean(axis=0)
        assert r > 150 and b < 80, name


def test_progressive_jpeg_and_palette_transparency(tmp_path: Path) -> None:
    source = Image.open(PRODUCTS / "wj04-white_main.jpg").convert("RGB")
    source.save(tmp_path / "baseline.jpg", quality=95)
    source.save(tmp_path / "progressive.jpg", quality=95, progressive=True)
    with Image.open(tmp_path / "progressive.jpg") as check:
        assert check.info.get("progressive") or check.info.get("progression")  # really progressive
    progressive = _pixels(load_image(tmp_path / "progressive.jpg", 8, 64)).astype(int)
    baseline = _pixels(load_image(tmp_path / "baseline.jpg", 8, 64)).astype(int)
    assert progressive.shape == baseline.shape
    assert np.abs(progressive - baseline).mean() < 2.0  # the same picture, fully decoded
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(1, (10, 10, 30, 30))
    palette.save(tmp_path / "logo.png", transparency=0)
    pixels = _pixels(load_image(tmp_path / "logo.png", 8, 64))
    assert pixels[0, 0].tolist() == [255, 255, 255]  # the transparent index is white, not black


def test_heic_without_a_decoder_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "phone.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    with pytest.raises(ImageLoadError) as info:
        load_image(path, 8, 64)
    assert info.value.kind == "unsupported_format" and "pillow-heif" in str(info.value)


def test_exif_orientation_in_png_metadata(tmp_path: Path) -> None:
    stored = Image.new("RGB", (60, 40), (255, 255, 255))
    stored.paste((200, 0, 0), (0, 0, 30, 40))  # left half red as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    stored.save(tmp_path / "rotated.png", exif=exif)
    loaded = load_image(tmp_path / "rotated.png", 8, 64)
    assert "exif_rotated" in loaded.notes and (loaded.width, loaded.height) == (40, 60)
    pixels = _pixels(loaded)
    top, bottom = pixels[: pixels.shape[0] // 3].mean(), pixels[-pixels.shape[0] // 3 :].mean()
    assert top < bottom  # the red half is now on top


def _interlaced_png(pixels: np.ndarray) -> bytes:
    """An Adam7-interlaced RGB PNG written by hand: Pillow reads these but cannot write them."""
    import struct
    import zlib

    height, width, _ = pixels.shape
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)  # 8-bit RGB, interlace method 1
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_interlaced_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    path = tmp_path / "interlaced.png"
    path.write_bytes(_interlaced_png(pixels))
    with Image.open(path) as im:
        assert im.info.get("interlace") == 1
        assert np.array_equal(np.asarray(im.convert("RGB")), pixels)
    loaded = load_image(path, 8, 64)
    assert (loaded.width, loaded.height) == (53, 37) and loaded.format == "PNG"


def test_pillow_bomb_guard_stays_on_for_the_process() -> None:
    """Importing qvl_label leaves Pillow's process-wide guard as Pillow sets it; giant JPEGs still decode."""
    import qvl_label.pipeline.images  # noqa: F401

    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's default
    with pytest.raises(Image.DecompressionBombError):
        Image.open(AWKWARD / "giant_20000x14000_gray.jpg")
    assert load_image(AWKWARD / "giant_20000x14000_gray.jpg", 64, 576).width == 20000
    with pytest.raises(ImageLoadError) as bomb:
        load_image(AWKWARD / "bomb_65536x65536.png", 64, 576)
    assert bomb.value.kind == "too_large"


def test_avif_decodes_where_pillow_reads_it() -> None:
    from PIL import features

    if features.check("avif"):
        loaded = load_image(AWKWARD / "avif_pitm.avif", 8, 256)
        assert loaded.format == "AVIF" and (loaded.width, loaded.height) == (4096, 800)
    else:
        with pytest.raises(ImageLoadError) as info:
            load_image(AWKWARD / "avif_pitm.avif", 8, 256)
        assert info.value.kind == "unsupported_format"
