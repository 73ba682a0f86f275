"""Stacked features: the run's pooled features side by side with those of other parts, each
a depth of the same base (``:stage6``), another base (``efficientnet_lite2``, or
``efficientnet_lite2:stage6``), or either pooled another way (``:stage6:grid2``).

Each part is an ordinary extraction with its own cache file, so a part made for one recipe
or run serves every other that names it, and a stack costs only the parts not cached yet.
The parts are drawn exactly as the run is (same dataset, draw, seed, crop and views), so
their rows are the same images in the same order; that is checked, never assumed.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from bottleneck.bases.registry import get_base
from bottleneck.core.errors import BottleneckError, CacheError
from bottleneck.extraction.run import stages_of


def parse(part: str, base: str, plan_kwargs: dict) -> tuple[str, dict]:
    """(base, plan keywords) of a part, ``[BASE][:LAYER[:POOLING]]``: the run's base when BASE
    is left out; when LAYER is, the run's layer for the run's base and its default layer for
    another (``BASE::grid2``); the run's pooling when POOLING is. The rest is the run's:
    dataset, draw, crop, views; another base runs at its own native size (an --image-size
    given is the run's base's)."""
    name, layer, pooling = (part.strip().split(":") + ["", ""])[:3]
    name = name or base
    get_base(name)  # an unknown base fails here, with the nearest name
    dropped = {"stack"} | ({"image_size"} if name != base else set())
    kw = {k: v for k, v in plan_kwargs.items() if k not in dropped}
    kw["layer"] = layer or (plan_kwargs.get("layer") if name == base else None)
    kw["pooling"] = pooling or plan_kwargs.get("pooling", "avg")
    if name == base and kw["layer"] == plan_kwargs.get("layer") and kw["pooling"] == plan_kwargs.get("pooling", "avg"):
        raise BottleneckError(f"stack part {part!r} is the run's own features",
                              "name a layer (:stage6), a pooling (::grid2) or another base (efficientnet_lite2)")
    return name, kw


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
    settings = {**main.settings, "stack": [":".join(fs.settings[k] for k in ("base", "layer", "pooling"))
                                           for fs in parts]}
    return dataclasses.replace(main, features=np.hstack([flat(main)] + [flat(fs) for fs in parts]),
                               settings=settings, info=info)
