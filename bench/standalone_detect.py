"""Score an exported GTSDB detector in a process that cannot import bottleneck: plain Keras loads
the .keras file, PIL letterboxes each test scene as its bottleneck.json says, TensorFlow's
combined_non_max_suppression runs the NMS it gives, pycocotools scores the boxes against gt.txt
(categories from the benchmark's ReadMe.txt). The mAP must be the one the run reported.

    .venv/bin/python bench/standalone_detect.py model.keras ../shared/datasets/gtsdb  (an unpacked GTSDB folder)

A third argument names a JSON file to write every scene's detections to (for comparisons).
"""
import sys

sys.modules["bottleneck"] = None  # importing the package would fail: nothing of it is used

import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def main(model_path: str, root: str, dump: str = "", first_test: int = 600) -> None:
    root = Path(root)
    meta = json.loads(zipfile.ZipFile(model_path).read("bottleneck.json"))
    model = keras.saving.load_model(model_path, safe_mode=True)
    size, (ch, cw), nms, names = meta["input"]["size"], meta["input"]["canvas"], meta["nms"], meta["output_names"]
    readme = dict(re.findall(r"^(\d+) = .* \((\w+)\)\s*$", (root / "ReadMe.txt").read_text(errors="replace"), re.M))
    to_class = (lambda c: names.index(readme[str(c)])) if meta["target"] == "categories" else int
    truth: dict[str, list] = {}
    for line in (root / "gt.txt").read_text().split():
        name, x1, y1, x2, y2, c = line.split(";")
        truth.setdefault(name[:5], []).append((int(x1), int(y1), int(x2) + 1, int(y2) + 1, to_class(int(c))))
    scenes = sorted(p for p in (root / "images").iterdir() if int(p.stem) >= first_test)
    images, annotations, results, per_scene = [], [], [], {}
    for k, path in enumerate(scenes):
        image = Image.open(path).convert("RGB")
        w0, h0 = image.size
        scale = size / max(w0, h0)
        w, h = max(1, round(w0 * scale)), max(1, round(h0 * scale))
        canvas = np.zeros((1, ch, cw, 3), np.uint8)
        canvas[0, :h, :w] = np.asarray(image.resize((w, h), Image.BILINEAR) if (w, h) != (w0, h0) else image)
        out = model.predict_on_batch(canvas)[0]
        boxes, scores = out[:, :4], out[:, 4:]
        flat = scores.reshape(-1)
        keep = np.flatnonzero(flat >= nms["score_threshold"])
        keep = keep[np.argsort(-flat[keep], kind="stable")[:nms["pre_nms"]]]
        anchor, cls = np.divmod(keep, scores.shape[1])
        sub = np.zeros((len(keep), scores.shape[1]), np.float32)
        sub[np.arange(len(keep)), cls] = flat[keep]
        found = tf.image.combined_non_max_suppression(
            boxes[anchor][None, :, None, :].astype(np.float32), sub[None], nms["max_detections"],
            nms["max_detections"], nms["iou_threshold"], nms["score_threshold"], clip_boxes=False)
        n = int(found.valid_detections[0])
        images.append({"id": k})
        for x1, y1, x2, y2, c in truth.get(path.stem, []):
            annotations.append({"id": len(annotations) + 1, "image_id": k, "category_id": c, "iscrowd": 0,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
        per_axis = np.array([w / w0, h / h0, w / w0, h / h0])  # canvas -> scene pixels, each side as it was rounded
        for (x1, y1, x2, y2), c, s in zip(found.nmsed_boxes[0, :n].numpy() / per_axis,
                                          found.nmsed_classes[0, :n].numpy(), found.nmsed_scores[0, :n].numpy()):
            x1, x2 = np.clip([x1, x2], 0, w0)
            y1, y2 = np.clip([y1, y2], 0, h0)
            results.append({"image_id": k, "category_id": int(c), "bbox": [float(x1), float(y1), float(x2 - x1),
                                                                          float(y2 - y1)], "score": float(s)})
            per_scene.setdefault(path.name, []).append([float(x1), float(y1), float(x2), float(y2), int(c), float(s)])
    if dump:
        Path(dump).write_text(json.dumps(per_scene))
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": i, "name": n} for i, n in enumerate(names)]}
    if not results:
        print(json.dumps({"scenes": len(scenes), "found": 0}))
        return
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    print(json.dumps({"scenes": len(scenes), "found": len(results), "map": round(float(ev.stats[0]), 6), "map50": round(float(ev.stats[1]), 6),
                      "map75": round(float(ev.stats[2]), 6), "reported": {k: meta["metrics"][k]
                                                                         for k in ("map", "map50", "map75")}}))


if __name__ == "__main__":
    main(*sys.argv[1:])
