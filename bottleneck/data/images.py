"""Decoding any image file to RGB uint8, and resizing, in bounded memory.

Images come from the web, so decoding guards memory three ways: an image with more
pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (PIL's decompression-bomb limit, about
89 megapixels unless you change it) is a bad image, named; a JPEG larger than the
base's input is decoded at a reduced scale (PIL's ``draft``: 1/2, 1/4 or 1/8, never
below the input size); and the decoders of all threads together hold at most
``BOTTLENECK_DECODE_BUDGET_MB`` (1024 by default) of decoded pixels at a time, so a folder of huge PNGs is
decoded one or a few at a time rather than all at once.
"""
from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from bottleneck.core.errors import BottleneckError, DatasetError
from bottleneck.core.userfiles import UnsafeFile, open_regular, read_bytes

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp"}

# Recorded in every cache file: bilinear resize to a square, large JPEGs decoded at a reduced scale first.
RESIZE_METHOD = "pil-bilinear+jpeg-draft"

# --resize device: the images' own pixels to the model, which resizes them (bilinear, half-pixel centres, in float).
DEVICE_RESIZE = "keras-bilinear-in-model"

# --resize device-mixed: images up to the input size to the model with their sizes, each resized there by its own
# scale (PIL's bilinear filter, in float); larger ones resized on the host as by default.
DEVICE_RESIZE_EACH = "pil-bilinear-in-model-each-size+host-above-input"

# --resize: where images are resized -> the method recorded in each cache file's settings
RESIZES = {"host": RESIZE_METHOD, "device": DEVICE_RESIZE, "device-mixed": DEVICE_RESIZE_EACH}

BYTES_PER_PIXEL = 8  # what decoding one pixel may hold at once (the decoded image and its RGB conversion)


class _Budget:
    """A weighted semaphore over bytes: ``take(n)`` waits until n bytes are free. A request
    larger than the whole budget waits until nothing else is held, then runs alone."""

    def __init__(self, total: int):
        self.total, self.used = total, 0
        self._cond = threading.Condition()

    def take(self, n: int) -> int:
        n = min(n, self.total)
        with self._cond:
            self._cond.wait_for(lambda: self.used + n <= self.total)
            self.used += n
        return n

    def give(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


def _budget_from_environment() -> _Budget:
    """BOTTLENECK_DECODE_BUDGET_MB (default 1024), read when first needed so that a bad value
    is a clear error of the command that uses it, not a traceback at import."""
    text = os.environ.get("BOTTLENECK_DECODE_BUDGET_MB", "1024")
    try:
        megabytes = float(text)
        if not 1 <= megabytes < 1 << 40:
            raise ValueError
    except ValueError:
        raise BottleneckError(f"BOTTLENECK_DECODE_BUDGET_MB={text!r} is not a number of megabytes (at least 1)",
                              "set it to e.g. 1024, or unset it") from None
    return _Budget(int(megabytes * (1 << 20)))


_BUDGETS: list[_Budget] = []  # the one budget of this process, once made
_BUDGET_LOCK = threading.Lock()


def decode_budget() -> _Budget:
    """The process's decode budget (``DECODE_BUDGET`` bytes), made at its first use."""
    with _BUDGET_LOCK:
        if not _BUDGETS:
            _BUDGETS.append(_budget_from_environment())
        return _BUDGETS[0]


class BadImage(DatasetError):
    """An image that cannot be decoded; ``path`` names it."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot read image {path}: {reason}",
                         "remove or replace the file, or pass --skip-bad-images to skip such files and list them")

    def __reduce__(self):  # travels back from a feed worker process intact
        return BadImage, (self.path, self.reason)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode (grayscale, RGBA, palette, 16-bit, float) -> 8-bit RGB."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(image).astype(np.float32)  # float32, not 64: half the memory for big images
        if image.mode.startswith("I;16") or (image.mode == "I" and arr.max() > 255):
            arr = arr / np.float32(257.0)  # 16-bit range -> 8-bit
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        image = Image.fromarray(arr, mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode(data: bytes, name: str | Path, size: int | None = None) -> Image.Image:
    """Decode an image file's bytes to RGB. ``size``: the square size it will be resized to
    (large JPEGs are then decoded at a reduced scale). BadImage names ``name`` otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            check_pixels(*image.size, name)
            if size and image.format == "JPEG":
                image.draft("RGB", (size, size))  # keeps both sides >= size
            budget = decode_budget()
            held = budget.take(image.size[0] * image.size[1] * BYTES_PER_PIXEL)
            try:
                image.load()
                return to_rgb(image)
            finally:
                budget.give(held)
    except BottleneckError:  # BadImage, a bad BOTTLENECK_DECODE_BUDGET_MB
        raise
    except Exception as e:  # PIL raises many types for bad data (OSError, SyntaxError, ValueError...)
        raise BadImage(name, f"{type(e).__name__}: {e}") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file from its header alone, with decode's checks: a file
    that is not an image, or is over the decompression-bomb limit, is a BadImage naming it."""
    try:
        with open_regular(path, "image") as f, Image.open(f) as image:
            width, height = image.size
    except FileNotFoundError:
        raise BadImage(path, "file not found") from None
    except UnsafeFile as e:
        raise BadImage(path, e.what) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadImage(path, f"{type(e).__name__}: {e}") from None
    check_pixels(width, height, path)
    return width, height


def check_pixels(width: int, height: int, name) -> None:
    """BadImage naming ``name`` for an image over PIL's decompression-bomb limit."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise BadImage(name, f"{width} x {height} pixels is over the decompression-bomb limit of "
                             f"{limit:,} pixels (PIL.Image.MAX_IMAGE_PIXELS)")


def load_image(path: str | Path, size: int | None = None) -> Image.Image:
    """Read and decode the file ``path`` as RGB; a BadImage error names the file otherwise."""
    return decode(read_image_bytes(path), path, size)


def read_image_bytes(path: str | Path) -> bytes:
    """The bytes of an image file: a regular file of at most ``LIMITS["image"]``, else BadImage."""
    try:
        return read_bytes(path, "image")
    except FileNotFoundError:
        raise BadImage(path, "file not found") from None
    except UnsafeFile as e:
        raise BadImage(path, e.what) from None
    except OSError as e:
        raise BadImage(path, f"cannot read it: {e}") from None


def resize(image: Image.Image, size: int) -> np.ndarray:
    """Bilinear resize to size x size (aspect not kept, as the classic lab did)."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)
