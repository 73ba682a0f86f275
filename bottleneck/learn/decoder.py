"""The segmentation decoder: an FPN-like top-down fusion of a base's cached pyramid levels,
and the batches it trains on, read lazily from the cache."""
from __future__ import annotations

import numpy as np


def build_decoder(shapes: dict[str, tuple], n_classes: int, out_shape: tuple[int, int], width: int = 96):
    """Top-down fusion of the levels (finest first in ``shapes``): 1x1 lateral convolutions to
    ``width`` channels, the coarser sum resized to the finer level's size and added, a 3x3
    convolution; then per-class logits, resized (bilinear) to the label map's canvas, softmax."""
    import keras
    from keras import layers

    inputs = {lv: keras.Input(shape, name=lv) for lv, shape in shapes.items()}
    levels = list(shapes)
    x = None
    for lv in reversed(levels):  # coarsest first
        lateral = layers.Conv2D(width, 1, name=f"lateral_{lv}")(inputs[lv])
        if x is not None:
            x = layers.Resizing(*shapes[lv][:2], interpolation="bilinear", name=f"up_to_{lv}")(x)
            lateral = layers.Add(name=f"fuse_{lv}")([lateral, x])
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"smooth_{lv}")(lateral)
    x = layers.Conv2D(n_classes, 1, name="logits")(x)
    x = layers.Resizing(*out_shape, interpolation="bilinear", name="to_labels")(x)
    return keras.Model(inputs, layers.Softmax(name="probabilities")(x), name="decoder")


def map_batches(reader, rows, labels_of, batch_size: int, shuffle: bool, seed: int, class_weights):
    """A keras PyDataset: (maps, labels, pixel weights) read lazily, batch by batch."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rows, self.epoch = np.asarray(rows), 0
            self.order = self._shuffled()

        def _shuffled(self):
            return np.random.default_rng([seed, self.epoch]).permutation(self.rows) if shuffle else self.rows

        def __len__(self):
            return max(1, -(-len(self.rows) // batch_size))

        def on_epoch_end(self):
            self.epoch += 1
            self.order = self._shuffled()

        def __getitem__(self, k):
            chosen = self.order[k * batch_size:(k + 1) * batch_size]
            labels = np.stack([labels_of(int(r)) for r in chosen])
            void = labels == 255
            weights = np.where(void, 0.0, class_weights[np.where(void, 0, labels)]).astype(np.float32)
            return reader.read(chosen), np.where(void, 0, labels).astype(np.int32), weights

    return Batches()


def median_frequency_weights(label_maps, n_classes: int, void: int) -> np.ndarray:
    """SegNet's class weighting: median frequency / frequency, where a class's frequency is its
    pixels over all pixels of the frames it appears in."""
    pixels, present = np.zeros(n_classes), np.zeros(n_classes)
    for labels in label_maps:
        counts = np.bincount(labels[labels != void].ravel(), minlength=n_classes)[:n_classes]
        pixels += counts
        present += (counts > 0) * counts.sum()
    freq = np.where(present > 0, pixels / np.maximum(present, 1), 0)
    median = np.median(freq[freq > 0]) if (freq > 0).any() else 1.0
    return np.where(freq > 0, median / np.maximum(freq, 1e-12), 0.0)
