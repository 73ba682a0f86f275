"""Decoding any image file to RGB uint8, and resizing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp"}
RESIZE_METHOD = "pil-bilinear"  # recorded in every cache file


class BadImage(DatasetError):
    """An image that cannot be decoded; ``path`` names it."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        super().__init__(f"cannot read image {path}: {reason}",
                         "remove or replace the file, or pass --skip-bad-images to skip such files and list them")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode (grayscale, RGBA, palette, 16-bit, float) -> 8-bit RGB."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(image).astype(np.float64)
        if image.mode.startswith("I;16") or (image.mode == "I" and arr.max() > 255):
            arr = arr / 257.0  # 16-bit range -> 8-bit
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        image = Image.fromarray(arr, mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open and fully decode ``path`` as RGB; a BadImage error names the file otherwise."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except FileNotFoundError:
        raise BadImage(path, "file not found") from None
    except Exception as e:  # PIL raises many types for bad data (OSError, SyntaxError, ValueError...)
        raise BadImage(path, f"{type(e).__name__}: {e}") from None


def resize(image: Image.Image, size: int) -> np.ndarray:
    """Bilinear resize to size x size (aspect not kept, as the classic lab did)."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)
