"""Turns any file a catalogue folder holds into upright sRGB pixels sized to the token budget, or a named error."""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageCms, ImageOps, JpegImagePlugin, UnidentifiedImageError

from ..engine.protocol import PreparedImage

# Pillow's decompression-bomb guard (Image.MAX_IMAGE_PIXELS) stays as it is for the whole
# process, so a server built on this package keeps it. Only a JPEG over it is opened past
# the guard, because draft mode decodes it at 1/8 scale; our own cap applies after that.

PIXELS_PER_TOKEN = 32 * 32  # Qwen3-VL: 16 px patches, 2x2 merged into one token
MAX_DECODED_PIXELS = 50_000_000  # ~150 MB of RGB: the memory cap for one decoded image
MAX_FILE_BYTES = 256 * 1024 * 1024

SUPPORTED_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "MPO", "BMP", "TIFF", "AVIF", "HEIF", "HEIC"}


class ImageLoadError(Exception):
    """A file that cannot become an image for the model; `kind` is the record status."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.sha256: str | None = None
        self.identity: tuple[int, int] | None = None  # (size, mtime_ns) when the file could be seen


@dataclass
class LoadedImage:
    prepared: PreparedImage
    sha256: str
    width: int  # upright size of the original, before resizing for the model
    height: int
    format: str
    mode: str
    notes: list[str] = field(default_factory=list)
    phash: int | None = None
    colour_layout: bytes | None = None
    identity: tuple[int, int] | None = None  # (size, mtime_ns) of the file when it was read


def budget_size(width: int, height: int, min_tokens: int, max_tokens: int) -> tuple[int, int]:
    """Qwen's smart resize: sides multiples of 32, aspect kept, token count within the budget."""
    factor = 32
    max_pixels = max_tokens * PIXELS_PER_TOKEN
    min_pixels = min_tokens * PIXELS_PER_TOKEN
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    if not min_pixels <= h_bar * w_bar <= max_pixels:
        # Rounding pushed the grid outside the budget (tight budgets, extreme aspect
        # ratios): take the in-budget grid closest in aspect ratio. Left as it was,
        # llama.cpp would resize again and could exceed the maximum.
        return _closest_grid(width, height, min_tokens, max_tokens)
    return w_bar, h_bar


def _closest_grid(width: int, height: int, min_tokens: int, max_tokens: int) -> tuple[int, int]:
    target = math.log(width / height)
    best: tuple[float, int, int, int] | None = None
    for cols in range(1, max_tokens + 1):
        lo = max(1, -(-min_tokens // cols))
        hi = max_tokens // cols
        if lo > hi:
            continue
        rows = min(max(lo, round(cols * height / width)), hi)
        score = abs(math.log(cols / rows) - target)
        candidate = (score, -cols * rows, cols, rows)
        if best is None or candidate < best:
            best = candidate
    assert best is not None
    return best[2] * 32, best[3] * 32


EMPTY_FILE = "file is empty (0 bytes)"


def read_file(path: Path) -> bytes:
    try:
        if path.is_symlink() and not path.exists():
            raise ImageLoadError("unreadable", "broken symbolic link")
        if not path.exists():
            raise ImageLoadError("not_found", "no such file")
        if path.is_dir():
            try:
                os.listdir(path)
            except OSError as exc:
                raise ImageLoadError("unreadable", f"folder cannot be read: {exc.strerror or exc}") from exc
            raise ImageLoadError("unreadable", "is a directory")
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a pipe would block the reader, /dev/zero never ends
            raise ImageLoadError("not_an_image", "not a regular file (a pipe, socket or device)")
        size = info.st_size
        if size == 0:
            raise ImageLoadError("empty_file", EMPTY_FILE)
        if size > MAX_FILE_BYTES:
            raise ImageLoadError("too_large", f"file is {size} bytes, over the {MAX_FILE_BYTES} byte limit")
        return path.read_bytes()
    except ImageLoadError:
        raise
    except RecursionError as exc:
        raise ImageLoadError("unreadable", "symbolic link loop") from exc
    except OSError as exc:
        raise ImageLoadError("unreadable", exc.strerror or str(exc)) from exc


def _to_srgb(im: Image.Image, notes: list[str]) -> Image.Image:
    """Apply an embedded ICC profile so CMYK and wide-gamut photos keep their colours."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "CMYK", "L"):
        return im
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        dst = ImageCms.createProfile("sRGB")
        out = ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        notes.append("icc_profile_ignored")
        return im
    if out is None:
        return im
    notes.append("icc_converted")
    return out


def _flatten(im: Image.Image, notes: list[str]) -> Image.Image:
    """Any mode to 8-bit RGB; transparency goes onto white so dark ink on clear stays visible."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.uint32)
        im = Image.fromarray((arr >> 8 if arr.max() > 255 else arr).astype(np.uint8), "L")
        notes.append("16bit_reduced")
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    has_alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        im.mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append("alpha_on_white")
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode == "CMYK":
        notes.append("cmyk_converted")
    return im.convert("RGB") if im.mode != "RGB" else im


def _dct_matrix(n: int) -> NDArray[Any]:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix: NDArray[Any] = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT32 = _dct_matrix(32)


def perceptual_hash(im: Image.Image) -> int:
    """64-bit pHash: signs of the 8x8 lowest DCT frequencies of a 32x32 grey thumbnail against their median."""
    grey = np.asarray(im.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT32 @ grey @ _DCT32.T)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def colour_layout(im: Image.Image) -> bytes:
    """4x4 average colours: pHash ignores colour, and a red and a blue variant of one shirt are different products."""
    return im.convert("RGB").resize((4, 4), Image.Resampling.BOX).tobytes()


def colour_difference(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two colour layouts, 0..255."""
    return float(np.abs(np.frombuffer(a, np.uint8).astype(np.int16) - np.frombuffer(b, np.uint8)).mean())


def _heif_brand(data: bytes) -> str | None:
    """HEIF-family files (HEIC, AVIF) start with an ISO-BMFF 'ftyp' box naming their brand."""
    if len(data) >= 12 and data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"heim", b"heis"):
            return "HEIC"
    return None


def _open(data: bytes) -> Image.Image:
    """Image.open with Pillow's bomb guard; a JPEG over it is opened directly, to be draft-decoded at reduced size."""
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        if not data.startswith(b"\xff\xd8"):
            raise
        # The plugin class reads the header without Image.open's process-wide check;
        # decode_image then decodes at 1/2..1/8 scale and applies MAX_DECODED_PIXELS.
        return JpegImagePlugin.JpegImageFile(io.BytesIO(data))


def load_image(path: Path, min_tokens: int, max_tokens: int, with_phash: bool = False) -> LoadedImage:
    # The identity is taken before the bytes are read: a file still growing then looks
    # changed on the next run, never finished.
    identity = file_identity(path)
    try:
        data = read_file(path)
    except ImageLoadError as exc:
        exc.identity = identity
        raise
    try:
        loaded = image_from_bytes(data, min_tokens, max_tokens, with_phash)
    except ImageLoadError as exc:
        exc.identity = identity
        raise
    loaded.identity = identity
    return loaded


def image_from_bytes(data: bytes, min_tokens: int, max_tokens: int, with_phash: bool = False) -> LoadedImage:
    """Bytes in memory (a file read, an upload) to an image; a failure carries the bytes' sha256."""
    if not data:
        raise ImageLoadError("empty_file", EMPTY_FILE)
    digest = hashlib.sha256(data).hexdigest()
    try:
        return decode_image(data, digest, min_tokens, max_tokens, with_phash)
    except ImageLoadError as exc:
        exc.sha256 = digest
        raise


def file_identity(path: str | Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file as it is now; None when it cannot be seen."""
    try:
        info = os.stat(path)
    except (OSError, ValueError, RecursionError):
        return None
    return info.st_size, info.st_mtime_ns


def decode_image(data: bytes, digest: str, min_tokens: int, max_tokens: int, with_phash: bool = False) -> LoadedImage:
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im: Image.Image = _open(data)
    except Image.DecompressionBombError as exc:
        raise ImageLoadError("too_large", f"over Pillow's decompression-bomb limit: {exc}") from exc
    except UnidentifiedImageError as exc:
        container = _heif_brand(data)
        if container:
            raise ImageLoadError(
                "unsupported_format",
                f"{container} image, which this Pillow cannot decode (install pillow-heif for HEIC)",
            ) from exc
        raise ImageLoadError("not_an_image", "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError("corrupt", f"cannot read image header: {exc}") from exc
    fmt = im.format or "unknown"
    if fmt not in SUPPORTED_FORMATS:
        raise ImageLoadError("unsupported_format", f"{fmt} images are not supported")
    original_mode = im.mode
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageLoadError("corrupt", "image has no pixels")
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
        notes.append("first_frame")

    target_pixels = max_tokens * PIXELS_PER_TOKEN
    if fmt == "JPEG" and width * height > 4 * target_pixels:
        # Decode at 1/2, 1/4 or 1/8 scale in libjpeg: a 24 MP photo never exists at full size.
        scale = math.sqrt(width * height / (4 * target_pixels))
        requested = (max(1, int(width / scale)), max(1, int(height / scale)))
        im.draft("RGB" if im.mode != "CMYK" else "CMYK", requested)
        if im.size != (width, height):
            notes.append("draft_decoded")
    if im.size[0] * im.size[1] > MAX_DECODED_PIXELS:
        raise ImageLoadError(
            "too_large",
            f"{width}x{height} pixels is over the {MAX_DECODED_PIXELS // 1_000_000} megapixel decode limit",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        kind = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise ImageLoadError(kind, f"cannot decode image: {exc}") from exc
    except MemoryError as exc:
        raise ImageLoadError("too_large", "not enough memory to decode image") from exc

    try:
        transposed = ImageOps.exif_transpose(im)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        transposed = im
        notes.append("exif_unreadable")
    if transposed is not None and transposed is not im:
        if transposed.size != im.size or im.getexif().get(0x0112, 1) != 1:
            notes.append("exif_rotated")
        im = transposed
    upright_w, upright_h = (width, height) if im.size == (width, height) else _scaled_upright(im, width, height)

    im = _to_srgb(im, notes)
    im = _flatten(im, notes)
    phash = perceptual_hash(im) if with_phash else None
    layout = colour_layout(im) if with_phash else None
    w, h = budget_size(im.size[0], im.size[1], min_tokens, max_tokens)
    if (w, h) != im.size:
        im = im.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return LoadedImage(
        prepared=PreparedImage(rgb=im.tobytes(), width=w, height=h),
        sha256=digest,
        width=upright_w,
        height=upright_h,
        format=fmt,
        mode=original_mode,
        notes=notes,
        phash=phash,
        colour_layout=layout,
    )


def _scaled_upright(im: Image.Image, width: int, height: int) -> tuple[int, int]:
    """Original size in upright orientation, when draft decoding or rotation changed im.size."""
    w, h = im.size
    if (w >= h) == (width >= height):
        return width, height
    return height, width
