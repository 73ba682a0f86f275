"""Same inputs, same seed, same machine: same numbers."""
from __future__ import annotations


def seed_everything(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.experimental.enable_op_determinism()
        except Exception:  # already enabled, or unavailable in this TF build
            pass
