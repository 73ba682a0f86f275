"""The feature-map product, for dense prediction (segmentation): frames letterboxed to one
canvas and run through the base, its pyramid's maps stored per image; ``plan_maps`` plans
such an extraction (see ``plan.plan``; nothing runs)."""
from __future__ import annotations

import hashlib

import numpy as np

from bottleneck.bases.build import build_pyramid_model
from bottleneck.bases.registry import get_base
from bottleneck.bases.weights import weights_identity
from bottleneck.cache.store import cache_path, canonical_dataset
from bottleneck.core.errors import BottleneckError
from bottleneck.data.datasets import load_dataset
from bottleneck.data.images import image_size
from bottleneck.data.labelmaps import canvas_for, letterbox
from bottleneck.data.sources import Dataset, Split, file_path
from bottleneck.extraction.plan import EXTRACTOR_VERSION, Plan


PIXELS_PER_BATCH = 8 << 20  # canvas pixels a batch may hold: 7 GTSDB scenes (1376x800); a batch of 32 peaked at 11 GB


class FeatureMaps:
    """Frames letterboxed to one canvas and run through the base; its pyramid's maps are
    stored per image (``maps/<level>``), in ``precision``. Views: the frame, and its mirror
    image when flips are asked for (the decoder then sees that augmentation too); with
    ``flips="only"``, the mirror image alone (detection mirrors only the scenes whose objects
    all have a mirror image, in a file of their own)."""

    per_row_chunks = True

    def __init__(self, long_side: int, canvas: tuple[int, int], levels: list[str], precision: str, flips: bool | str):
        self.long_side, self.canvas, self.levels, self.precision = long_side, canvas, levels, precision
        self.views = ("hflip",) if flips == "only" else ("", "hflip") if flips else ("",)
        self.dtypes = {f"maps/{lv}": precision for lv in levels}

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.canvas

    @property
    def max_batch(self) -> int:
        """The largest batch of canvases extracted at once (``PIXELS_PER_BATCH``): the base's
        activations grow with a batch's pixels, and scenes are large."""
        return max(1, PIXELS_PER_BATCH // (self.canvas[0] * self.canvas[1]))

    def decode(self, split: Split, index: int, digest: str):
        return split.load(index, None, digest.split(":")[0])

    def fit(self, image, view: str) -> np.ndarray:
        out = letterbox(image, self.long_side, self.canvas)
        return out[:, ::-1] if view == "hflip" else out  # the padding moves to the left: labels follow

    def build(self, order):
        return build_pyramid_model(order.spec, self.canvas, order.weights_path, self.levels)

    def outputs(self, out) -> dict[str, np.ndarray]:
        return {f"maps/{lv}": np.asarray(out[lv]).astype(self.precision) for lv in self.levels}


def plan_maps(base: str, dataset: str | Dataset, split: str, per_class: int | None = None, seed: int = 0, *,
              image_size: int | None = None, levels: list[str] | None = None, precision: str = "float16",
              flips: bool | str = False, target: str | None = None, data_dir=None, cache_dir="features",
              weights: str = "imagenet", weights_dir=None, test_fraction: float | None = None,
              only=None, canvas: tuple[int, int] | None = None) -> Plan:
    """Plan a feature-map extraction (see ``extraction.plan``; nothing runs). ``flips``: also
    the mirror image of each frame (True), or only it ("only"). ``only``: keep just these
    indices of the split from the draw. ``canvas``: (height, width) to letterbox onto, e.g.
    the training frames' (every frame must fit it); by default the smallest that holds them."""
    spec = get_base(base)
    if not spec.pyramid:
        raise BottleneckError(f"{spec.name} has no pyramid levels", "choose a base listed by `bottleneck bases`")
    levels = levels or [lv for lv, _ in spec.pyramid]
    if precision not in ("float16", "float32"):
        raise BottleneckError(f"unknown map precision {precision!r}", "use float16 or float32")
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_dir)
    if test_fraction is not None:
        ds = ds.with_test_fraction(test_fraction)
    tgt = ds.target(target)
    s = ds.split(split)
    selected, short = tgt.draw(s, per_class, seed)
    if only is not None:
        selected = np.intersect1d(selected, np.asarray(only, np.int64))
    if not len(selected):
        raise BottleneckError(f"no image of {ds.name}'s {split} split is left to extract", "check the selection")
    sizes = [frame_size(s, i) for i in selected]
    long_side = image_size or max(max(w, h) for w, h in sizes)
    if not spec.min_size <= long_side <= spec.max_scene_size:
        raise BottleneckError(f"--image-size {long_side} is outside {spec.name}'s {spec.min_size}.."
                              f"{spec.max_scene_size} for scenes",
                              "pass an --image-size in that range (the frames' long side)")
    needed = canvas_for(sizes, long_side)
    if canvas is not None and (needed[0] > canvas[0] or needed[1] > canvas[1]):
        raise BottleneckError(f"the {split} images need a {needed[0]}x{needed[1]} canvas at long side {long_side}, "
                              f"more than the {canvas[0]}x{canvas[1]} of the training images",
                              "give the splits images of one size (or one aspect)")
    canvas = canvas or needed
    weights_id, weights_path = weights_identity(spec, weights, weights_dir)
    recipe = FeatureMaps(long_side, canvas, levels, precision, flips)
    image_digests = s.digests(selected)
    digests = [d + (f":{v}" if v else "") for d in image_digests for v in recipe.views]
    ids = "\n".join(s.ids[i] for i in selected)
    settings = {
        "dataset": canonical_dataset(ds.name), "dataset_id": ds.identity(split), "split": split,
        "test_fraction": test_fraction, "base": spec.name, "weights": weights_id, "kind": "maps",
        "levels": {lv: dict(spec.pyramid)[lv] for lv in levels}, "precision": precision,
        "geometry": f"long side {long_side}, canvas {canvas[0]}x{canvas[1]}, padded with zeros right/bottom",
        "resize": "pil-bilinear (labels: nearest)", "preprocessing": spec.preprocessing,
        "views": list(recipe.views), "per_class": per_class, "seed": seed if per_class is not None else None,
        "draw": tgt.draw_key if per_class is not None else None,
        "selection": hashlib.sha256(ids.encode()).hexdigest()[:16],
        "content": hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16], "extractor": EXTRACTOR_VERSION,
    }
    return Plan(spec, ds, split, selected, digests, settings, cache_path(cache_dir, settings), weights_path, short,
                recipe)


def frame_size(split: Split, index: int) -> tuple[int, int]:
    """(width, height) of image ``index`` of the split, from the file's header when it is a file."""
    path = file_path(split, index)
    if path is not None:
        return image_size(path)  # the header only
    return split.load(index).size
