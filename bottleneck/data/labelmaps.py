"""Segmentation label maps: reading them (one class id per pixel, checked against the
image and the codes), and letterboxing frames and maps to one canvas (bilinear for images,
nearest neighbour for labels, padded with zeros and Void)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from bottleneck.core.errors import DatasetError
from bottleneck.core.userfiles import UnsafeFile, check_size, open_regular
from bottleneck.data.images import BadImage, check_pixels, image_size

MULTIPLE = 32  # canvas sides are multiples of the coarsest stride
CAMVID_COLOURS = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)]  # SegNet's palette


def class_palette(n: int) -> np.ndarray:
    """(n, 3) uint8 colours of n classes: CamVid's own for up to 11, matplotlib's tab20 beyond
    (the report's pictures and predict's mask files use the same)."""
    if n <= len(CAMVID_COLOURS):
        return np.array(CAMVID_COLOURS[:n], np.uint8)
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return np.array([[int(255 * c) for c in cmap(i % 20)[:3]] for i in range(n)], np.uint8)


def label_palette(n_classes: int) -> np.ndarray:
    """(256, 3) colours for every uint8 class id: the classes' own, black beyond (Void)."""
    return np.vstack([class_palette(n_classes), np.zeros((256 - n_classes, 3), np.uint8)])


def scaled_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(width, height) with the long side set to ``long_side``, aspect kept."""
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def letterbox_scale(width: int, height: int, long_side: int) -> tuple[float, float]:
    """(x, y) factors from an image's pixels to its letterboxed canvas's (``scaled_size``
    rounds each side, so the two differ slightly)."""
    w, h = scaled_size(width, height, long_side)
    return w / width, h / height


def canvas_for(sizes, long_side: int) -> tuple[int, int]:
    """(height, width) of one canvas that holds every image resized, in multiples of 32."""
    scaled = [scaled_size(w, h, long_side) for w, h in sizes]
    up = lambda v: int(math.ceil(v / MULTIPLE) * MULTIPLE)
    return up(max(h for _, h in scaled)), up(max(w for w, _ in scaled))


def letterbox(image: Image.Image, long_side: int, canvas: tuple[int, int]) -> np.ndarray:
    """The image resized (bilinear, aspect kept) and padded with zeros to the canvas."""
    w, h = scaled_size(*image.size, long_side)
    out = np.zeros((*canvas, 3), np.uint8)
    out[:h, :w] = np.asarray(image.resize((w, h), Image.BILINEAR) if (w, h) != image.size else image)
    return out


def letterbox_labels(labels: np.ndarray, long_side: int, canvas: tuple[int, int], void: int) -> np.ndarray:
    """A label map resized with nearest neighbour only (never blending two classes) and padded with Void."""
    h0, w0 = labels.shape
    w, h = scaled_size(w0, h0, long_side)
    if (w, h) != (w0, h0):
        labels = np.asarray(Image.fromarray(labels).resize((w, h), Image.NEAREST))
    out = np.full(canvas, void, np.uint8)
    out[:h, :w] = labels
    return out


def read_label_map(path: Path, image_path: Path | None, n_classes: int, void: int) -> np.ndarray:
    """A label map as uint8 class ids; its size must be its image's; ids beyond the codes are errors."""
    try:
        with open_regular(path, "label map") as f, Image.open(f) as im:
            check_size(path, os.fstat(f.fileno()).st_size, "label map")
            size = im.size
            check_pixels(*size, path)  # from the header: a map over the pixel limit is never decoded
            labels = np.asarray(im)
    except FileNotFoundError:
        raise DatasetError(f"the label map {path} is missing", "restore it, or remove its image") from None
    except BadImage as e:
        raise DatasetError(f"cannot read the label map {path}: {e.reason}", "restore the file") from None
    except UnsafeFile as e:
        raise DatasetError(f"cannot read the label map {path}: {e.what}", e.todo) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot read the label map {path}: {type(e).__name__}: {e}", "restore the file") from None
    if labels.ndim != 2:
        raise DatasetError(f"{path} is not a single-channel map of class ids (shape {labels.shape})",
                           "label maps hold one class id per pixel (mode L or P)")
    if image_path is not None:
        image = image_size(image_path)
        if image != size:
            raise DatasetError(f"the label map {path} is {size[0]}x{size[1]} but its image {image_path} is "
                               f"{image[0]}x{image[1]}", "pair each image with its own label map")
    top = int(labels.max()) if labels.size else 0
    if top >= n_classes and top != void:
        raise DatasetError(f"{path} holds class id {top}, beyond codes.txt's {n_classes} classes and Void ({void})",
                           "fix the label map or codes.txt")
    return labels.astype(np.uint8)
