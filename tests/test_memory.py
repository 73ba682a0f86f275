"""No input exhausts memory: batch size, image size, decompression bombs, huge images."""
from __future__ import annotations

import json
import os
import struct
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from bottleneck.extraction.model import check_batch_memory
from bottleneck.bases.build import build_feature_model
from bottleneck.bases.registry import get_base
from bottleneck.core.errors import BottleneckError
from bottleneck.extraction.run import extract
from bottleneck.data.images import BadImage, decode

from . import warm
from .conftest import copy_cifar_subset

TINY = dict(weights="random", progress=False)


def test_a_huge_batch_size_is_capped_at_the_images_there_are(small_cifar, cache_dir):
    fs = extract("tiny_cnn", f"folder:{small_cifar}", "train", None, cache_dir=cache_dir, batch_size=100_000,
                 **TINY)
    assert len(fs) == 24 and fs.info["batch_size"] == 24  # not a batch padded to 100,000 images
    again = extract("tiny_cnn", f"folder:{small_cifar}", "train", None, cache_dir=cache_dir.parent / "b", **TINY)
    np.testing.assert_allclose(fs.features, again.features, rtol=1e-5, atol=1e-6)


def test_a_batch_that_cannot_fit_in_memory_is_refused_before_it_runs():
    model = build_feature_model(get_base("tiny_cnn"), 128, None)
    with pytest.raises(BottleneckError, match=r"a batch of 10000000 images at 128 px needs about .* GiB") as e:
        check_batch_memory(model, 10_000_000, 128)
    assert "--batch-size" in e.value.todo
    check_batch_memory(model, 32, 128)  # an ordinary batch passes


def test_image_size_is_bounded_per_base(small_cifar, cache_dir):
    with pytest.raises(BottleneckError, match="above tiny_cnn's maximum of 128 pixels"):
        extract("tiny_cnn", f"folder:{small_cifar}", "train", 2, cache_dir=cache_dir, image_size=10_000, **TINY)
    with pytest.raises(BottleneckError, match="above efficientnet_lite0's maximum of 896"):
        extract("efficientnet_lite0", f"folder:{small_cifar}", "train", 2, cache_dir=cache_dir, image_size=10_000,
                **TINY)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + \
        chunk(b"IEND", b"")


def test_decompression_bombs_are_named_bad_images_and_skippable(small_cifar, cache_dir):
    with pytest.raises(BadImage, match="12000 x 12000 pixels is over the decompression-bomb limit"):
        decode(_png_claiming(12_000, 12_000), "bomb.png", 32)
    for i in range(12):
        (small_cifar / "train" / "cat" / f"bomb{i}.png").write_bytes(_png_claiming(12_000, 12_000))
    with pytest.raises(BadImage, match="bomb0.png"):
        extract("tiny_cnn", f"folder:{small_cifar}", "train", None, cache_dir=cache_dir, **TINY)
    fs = extract("tiny_cnn", f"folder:{small_cifar}", "train", None, cache_dir=cache_dir, skip_bad_images=True,
                 **TINY)
    assert len(fs) == 24 and "train/cat/bomb11.png" in fs.info["skipped"]


def test_the_cli_names_a_bomb_without_pil_warnings(small_cifar, tmp_path):
    (small_cifar / "train" / "cat" / "bomb.png").write_bytes(_png_claiming(12_000, 12_000))
    out = warm.run([sys.executable, "-m", "bottleneck", "extract", "--base", "tiny_cnn", "--weights", "random",
                    "--dataset", f"folder:{small_cifar}", "--cache-dir", str(tmp_path / "c")])
    assert out.returncode == 2 and "bomb.png" in out.stderr and "decompression-bomb limit" in out.stderr
    assert "DecompressionBombWarning" not in out.stderr and "Traceback" not in out.stderr


def test_large_jpegs_are_decoded_at_a_reduced_scale(tmp_path):
    import io

    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (200, 30, 30)).save(buf, format="JPEG")
    assert decode(buf.getvalue(), "big.jpg", 224).size == (500, 375)  # 1/8 scale, both sides still >= 224
    assert decode(buf.getvalue(), "big.jpg", None).size == (4000, 3000)
    assert decode(buf.getvalue(), "big.jpg", 1000).size == (2000, 1500)


_PEAK = """
import json, sys
from bottleneck.extraction.run import extract

def peak_kb():  # this process's own high-water mark (ru_maxrss may hold a parent's); each run starts alike
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

extract("tiny_cnn", "folder:" + sys.argv[1] + "/warm", "train", None, cache_dir=sys.argv[2] + "/w", weights="random",
        progress=False, image_size=32)  # TensorFlow and the model are loaded before the peak is compared
before = peak_kb()
extract("tiny_cnn", "folder:" + sys.argv[1] + "/big", "train", None, cache_dir=sys.argv[2] + "/c", weights="random",
        progress=False, image_size=32, workers=6, batch_size=1, feed="threads")
print(json.dumps({"before_kb": before, "peak_kb": peak_kb()}))
"""


def _peak_mb(tmp_path, n_big: int, budget_mb: int) -> float:
    root = tmp_path / f"big{n_big}"
    copy_cifar_subset(root / "warm", classes=2, train=2, test=1)
    for i in range(n_big):
        d = root / "big" / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        # 4000 x 4000: about 64 MB decoded (PIL holds RGB in 4 bytes a pixel), 60 kB as a file
        Image.new("RGB", (4000, 4000), (i * 20, 100, 50)).save(d / f"{i}.png", compress_level=1)
    env = {**os.environ, "BOTTLENECK_DECODE_BUDGET_MB": str(budget_mb)}
    out = warm.run([sys.executable, "-c", _PEAK, str(root), str(tmp_path / f"cache{n_big}-{budget_mb}")], env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_kb"] / 1024


def test_peak_memory_does_not_grow_with_the_number_of_huge_images(tmp_path):
    """Six decode threads on huge PNGs would hold six decoded images at once; the decode budget
    holds one. The unbounded run is the control that shows the measurement can see it."""
    few = _peak_mb(tmp_path, 2, budget_mb=64)
    many = _peak_mb(tmp_path, 8, budget_mb=64)
    unbounded = _peak_mb(tmp_path, 8, budget_mb=100_000)
    assert many - few < 60, (few, many, unbounded)
    assert unbounded - many > 100, (few, many, unbounded)
