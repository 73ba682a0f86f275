"""Stacked features: the run's pooled features side by side with those of other parts, each
a depth of the same base (``:stage6``) or another base (``efficientnet_lite2``, or
``efficientnet_lite2:stage6``).

Each part is an ordinary extraction with its own cache file, so a part made for one recipe
or run serves every other that names it, and a stack costs only the parts not cached yet.
The parts are drawn exactly as the run is (same dataset, draw, seed, crop and views), so
their rows are the same images in the same order; that is checked, never assumed.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from .bases import get_base
from .errors import BottleneckError, CacheError
from .extraction import stages_of


def parse(part: str, base: str) -> tuple[str, str | None]:
    """(base, layer or None for its default) of a part: ``:LAYER`` (the run's base at that
    layer), ``BASE`` or ``BASE:LAYER``."""
    name, _, layer = part.strip().partition(":")
    name = name or base
    get_base(name)  # an unknown base fails here, with the nearest name
    if not layer and name == base:
        raise BottleneckError(f"stack part {part!r} is the run's own features", "name a layer (:stage6) or "
                              "another base (efficientnet_lite2)")
    return name, layer or None


def part_kwargs(name: str, layer: str | None, base: str, plan_kwargs: dict) -> dict:
    """The plan keywords of a part: the run's, at the part's layer; another base at its own
    native size (an --image-size given is the run's base's)."""
    kw = {k: v for k, v in plan_kwargs.items() if k != "stack"}
    kw["layer"] = layer
    if name != base:
        kw.pop("image_size", None)
    return kw


def stacked(main, parts: list):
    """``main`` (a FeatureSet) with the parts' features appended column-wise; the rows must be
    the same images in the same order in every part."""
    if not parts:
        return main
    for fs in parts:
        if fs.source_ids != main.source_ids or not np.array_equal(fs.labels, main.labels):
            raise CacheError(f"{fs.path.name} does not hold the rows of {main.path.name} (other images, or another "
                             "order)", "extract the parts with the same dataset, draw, crop and views")
    flat = lambda fs: fs.features.reshape(len(fs), -1)
    info = dict(main.info)
    for key in ("extracted", "reused", "seconds"):
        info[key] = sum(fs.info.get(key, 0) for fs in [main, *parts])
    stages = stages_of([main, *parts])
    info.pop("stages", None)
    if stages:
        info["stages"] = json.dumps(stages)
    settings = {**main.settings, "stack": [f"{fs.settings['base']}:{fs.settings['layer']}" for fs in parts]}
    return dataclasses.replace(main, features=np.hstack([flat(main)] + [flat(fs) for fs in parts]),
                               settings=settings, info=info)
