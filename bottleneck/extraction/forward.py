"""A base's forward pass over a stream of batches: the next batch is sent before the last one
is read back, where the backend allows it.

JAX and PyTorch queue work on a GPU and return at once; reading the result back to the host is
what waits. So ``send`` puts batch k+1 on the device before ``take`` reads batch k back, and the
device computes k+1 while this process turns k into a chunk for the writer and fetches the next
batch from the feed. Under TensorFlow (and on a CPU, where nothing is queued) the two steps are
one: ``send`` runs ``predict_on_batch``, as it always did.

The features are those of ``predict_on_batch``, bit for bit: JAX's path compiles the same
stateless call that Keras's predict step compiles, and PyTorch's runs the same eager call under
``no_grad`` (``tests/test_forward.py`` checks both against ``predict_on_batch``).
"""
from __future__ import annotations

import numpy as np

IN_FLIGHT = 2  # batches sent and not yet read back, at most: one computing, one being read


def on_cpu() -> bool:
    """Whether Keras's backend runs models on this machine's CPU (it sees no GPU or TPU): the
    model then competes with the feed for the same cores."""
    import keras

    backend = keras.backend.backend()
    if backend == "torch":  # Keras's torch backend picks CUDA, then MPS, when there is one
        import torch

        mps = getattr(torch.backends, "mps", None)
        return not (torch.cuda.is_available() or (mps is not None and mps.is_available()))
    if backend in ("tensorflow", "jax"):
        return all(device.lower().startswith("cpu") for device in keras.distribution.list_devices())
    return True


def forward_of(model) -> Forward:
    """The model's ``Forward``, made once per model (JAX compiles its call once, as Keras
    compiles ``predict_on_batch`` once). It is kept on the model, so it lives exactly as long
    as the model does (a table of them would keep every model of a grid alive)."""
    run = getattr(model, "_bottleneck_forward", None)
    if run is None:
        run = model._bottleneck_forward = Forward(model)
    return run


class Forward:
    """``send(x)`` starts the model on batch ``x`` and returns a handle; ``take(handle)``
    waits for it and returns the outputs as NumPy arrays (the structure ``predict_on_batch``
    returns). ``x`` must not change until its ``take`` returns: the device may read it late.

    Parameters
    ----------
    model : keras.Model
        The feature model, built; it runs in inference mode (``training=False``).
    """

    def __init__(self, model):
        import keras  # here, not at the top: the feed's worker processes import this module's importers

        self.model = model
        self.backend = keras.backend.backend()
        self._call = {"jax": _jax_call, "torch": _torch_call}.get(self.backend, lambda m: None)(model)

    @property
    def queued(self) -> bool:
        """Whether ``send`` returns before the model has run (JAX, PyTorch)."""
        return self._call is not None

    @property
    def in_flight(self) -> int:
        """How many batches to send before taking the oldest back: ``IN_FLIGHT`` where ``send``
        returns at once, else 1 (its result is there already)."""
        return IN_FLIGHT if self.queued else 1

    def send(self, x: np.ndarray):
        if self._call is None:
            return self.model.predict_on_batch(x)
        return self._call(x)

    def take(self, sent):
        if self._call is None:
            return sent
        import keras

        return keras.tree.map_structure(keras.ops.convert_to_numpy, sent)


def _jax_call(model):
    """The model's stateless inference call, compiled by XLA as Keras's predict step compiles it.

    The variables' values are read at each call, not once: Keras replaces them whenever the
    model's weights are set, and its own ``predict_on_batch`` donates them to XLA on a GPU
    (deleting the arrays this call would otherwise still hold), then stores new ones."""
    import jax

    trainable, non_trainable = list(model.trainable_variables), list(model.non_trainable_variables)

    @jax.jit
    def call(trainable, non_trainable, x):
        return model.stateless_call(trainable, non_trainable, x, training=False)[0]

    return lambda x: call([v.value for v in trainable], [v.value for v in non_trainable], x)


def _torch_call(model):
    """The model's eager inference call without autograd, as Keras's predict step runs it."""
    import torch

    def call(x):
        with torch.no_grad():
            return model(x, training=False)

    return call
