"""The model an extraction runs, built once per process, the same way for the local engine
and for Ray's workers: a ``ModelOrder`` is small and picklable, so it travels to them."""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
from pathlib import Path

from bottleneck.bases.build import estimate_batch_bytes
from bottleneck.bases.registry import BaseSpec
from bottleneck.core.errors import BottleneckError

log = logging.getLogger("bottleneck")
_MODELS: collections.OrderedDict = collections.OrderedDict()  # built feature models, most recent last


@dataclasses.dataclass
class ModelOrder:
    """What builds a plan's model and nothing more: small and picklable, so it can travel to
    an engine's workers (``--engine ray``), which build it once each."""

    spec: BaseSpec
    settings: dict
    weights_path: Path | None
    recipe: object

    @property
    def key(self) -> str:
        s = self.settings
        return json.dumps({k: s.get(k) for k in ("base", "weights", "image_size", "layer", "pooling", "levels",
                                                 "geometry", "resize", "source_size", "compute")}, sort_keys=True)


def built_model(order: ModelOrder, batch_size: int):
    """``model_of(order)``, refused when a batch of ``batch_size`` would not fit in memory."""
    model = model_of(order)
    check_batch_memory(model, batch_size, " x ".join(map(str, order.recipe.input_shape)))
    return model


def model_of(order: ModelOrder):
    """The order's model, built once per process (the two most recent are kept)."""
    if order.key not in _MODELS:
        _MODELS[order.key] = order.recipe.build(order)
        while len(_MODELS) > 2:
            _MODELS.popitem(last=False)
    _MODELS.move_to_end(order.key)
    return _MODELS[order.key]


def check_batch_memory(model, batch_size: int, size) -> None:
    """Refuse a batch whose activations would not fit in this machine's memory, before
    the first forward pass tries (and the kernel kills the process)."""
    need = estimate_batch_bytes(model, batch_size)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.6 * total:
        fits = max(1, int(batch_size * 0.6 * total / need))
        raise BottleneckError(
            f"a batch of {batch_size} images at {size} px needs about {need / 2**30:.1f} GiB for the model's "
            f"activations; this machine has {total / 2**30:.1f} GiB",
            f"use --batch-size {min(fits, batch_size - 1)} or less (or a smaller --image-size)")


def clear_models() -> None:
    """Forget the models built in this process (the next extraction builds its own)."""
    _MODELS.clear()
