"""Objects in images: datasets of boxes. GTSDB's road scenes (``gt.txt``), and a user's own
boxes in the two formats people have: COCO JSON (``coco:FILE.json`` or a folder of
``train.json``/``val.json``/``test.json``, images under ``images/`` beside them or in the same
folder) and YOLO (``yolo:FOLDER``: ``images/`` and ``labels/``, flat or split in
``train/``/``val/``/``test/``, one ``class cx cy w h`` line a box in fractions of the image,
class names in ``classes.txt`` or ``data.yaml``).

Every box is checked when the dataset is read: a box outside its image, of zero or negative
size, an unknown class, a missing image, a label file for no image are errors that name the
file and the line (or the annotation's id). An image without boxes is a negative and stays in.
Boxes are kept in pixels of the image (``core.boxes``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from bottleneck.core.boxes import boxes_array
from bottleneck.core.errors import DatasetError
from bottleneck.core.tasks import Detection
from bottleneck.core.userfiles import UnsafeFile
from bottleneck.data.images import IMAGE_SUFFIXES, BadImage, image_size
from bottleneck.data.sources import Dataset, FileSource, Split, dataset_text, inside, is_file_there
from bottleneck.data.targets import Target, gtsrb_attribute_table

GTSDB_TEST_FROM = 600  # scenes 00000-00599 train, 00600-00899 test: the benchmark's usual split
EDGE = 0.5  # pixels a box may overhang its image (annotation tools round): more is an error


def gtsdb_table() -> dict:
    """The package's copy of GTSDB's ReadMe table: class id -> category (``gtsdb_categories.json``)."""
    return json.loads((Path(__file__).parent / "gtsdb_categories.json").read_text())


def gtsrb_class_names() -> list[str]:
    table = gtsrb_attribute_table()
    return [table["classes"][str(c)]["name"] for c in range(len(table["classes"]))]


def detection_target(name: str, class_names, objects_of, groups=(), description: str = "") -> Target:
    """A detection target: ``objects_of(source id)`` -> (n, 5) boxes and class ids of that image."""
    task = Detection(tuple(class_names), tuple((g, tuple(m)) for g, m in groups))
    return Target(name, task, description or "every object's box and class",
                  lambda s: _objects(s, objects_of), draw_key="images")


def _objects(split: Split, objects_of) -> np.ndarray:
    out = np.empty(len(split), dtype=object)
    for i, sid in enumerate(split.ids):
        out[i] = objects_of(sid)
    return out


def _split(root: Path, rel: list[str]) -> Split:
    return Split(list(rel), np.full(len(rel), -1, np.int64), list(rel), FileSource(root, rel))


def _size_of(path: Path, where: str) -> tuple[int, int]:
    try:
        return image_size(path)
    except FileNotFoundError:
        raise DatasetError(f"{where}: the image {path} is missing", "restore it, or remove its boxes") from None
    except (BadImage, UnsafeFile) as e:
        raise DatasetError(f"{where}: cannot read the image {path}: {getattr(e, 'reason', None) or e.what}",
                           "restore the file") from None


def check_box(box, size: tuple[int, int], n_classes: int, where: str, class_names=None) -> None:
    """A box (x1, y1, x2, y2, class) must lie in its image (``EDGE`` pixels of slack), have a
    positive width and height, and a known class."""
    x1, y1, x2, y2, c = box
    if not np.isfinite([x1, y1, x2, y2]).all():
        raise DatasetError(f"{where}: a box coordinate is not a number", "fix the box")
    if not (x2 > x1 and y2 > y1):
        raise DatasetError(f"{where}: the box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has zero or negative size",
                           "fix the box (x2 > x1 and y2 > y1), or remove it")
    w, h = size
    if x1 < -EDGE or y1 < -EDGE or x2 > w + EDGE or y2 > h + EDGE:
        raise DatasetError(f"{where}: the box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is outside its {w}x{h} image",
                           "fix the box, or check that it belongs to this image")
    if not (0 <= c < n_classes) or int(c) != c:
        names = f" ({', '.join(class_names[:5])}...)" if class_names else ""
        raise DatasetError(f"{where}: unknown class id {c:g}; the classes are 0..{n_classes - 1}{names}",
                           "fix the class id, or declare the class")


def _clipped(rows, size) -> np.ndarray:
    """Boxes within EDGE of the border are clipped to the image."""
    out = boxes_array(rows)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, size[0])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, size[1])
    return out


# ------------------------------------------------------------------ GTSDB

def is_gtsdb(root: Path) -> bool:
    return (root / "gt.txt").is_file() and (root / "images").is_dir()


def read_gtsdb(root: Path, name: str) -> Dataset:
    """GTSDB: ``images/NNNNN.jpg`` (or .ppm/.png) and ``gt.txt`` (``NNNNN.ppm;left;top;right;bottom;ClassId``,
    inclusive pixel columns and rows: the box is left..right+1). Scenes 0-599 train, 600-899
    test. Targets: ``signs`` (GTSRB's 43 classes, default) and ``categories`` (the four)."""
    table = gtsdb_table()
    categories = table["categories"]
    category_of = {int(c): categories.index(v["category"]) for c, v in table["classes"].items()}
    if (root / "ReadMe.txt").is_file():
        _check_readme(root / "ReadMe.txt", table)
    files = {f.stem: f for f in sorted((root / "images").iterdir())
             if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES | {".ppm"}}
    if not files:
        raise DatasetError(f"{root / 'images'} holds no scenes", "restore GTSDB's images/")
    sizes: dict[str, tuple[int, int]] = {}
    boxes: dict[str, list] = {stem: [] for stem in files}
    gt = root / "gt.txt"
    for n, line in enumerate(_lines(gt), 1):
        if not line.strip():
            continue
        where = f"{gt}, line {n}"
        parts = line.strip().split(";")
        if len(parts) != 6:
            raise DatasetError(f"{where}: {line.strip()[:80]!r} is not 'NNNNN.ppm;left;top;right;bottom;ClassId'",
                               "fix the line")
        try:
            left, top, right, bottom, c = (int(p) for p in parts[1:])
        except ValueError:
            raise DatasetError(f"{where}: the box and class must be whole numbers, got {parts[1:]}",
                               "fix the line") from None
        stem = Path(parts[0]).stem
        if stem not in files:
            raise DatasetError(f"{where}: the scene {parts[0]} is not in {root / 'images'}",
                               "restore the scene, or remove its lines")
        if stem not in sizes:
            sizes[stem] = _size_of(files[stem], where)
        box = (left, top, right + 1, bottom + 1, c)  # inclusive pixel indices -> continuous coordinates
        check_box(box, sizes[stem], 43, where)
        boxes[stem].append(box)
    rel = {stem: str(f.relative_to(root)) for stem, f in files.items()}
    objects = {rel[stem]: _clipped(b, sizes.get(stem, (np.inf, np.inf))) for stem, b in boxes.items()}
    train = [rel[s] for s in files if not s.isdigit() or int(s) < GTSDB_TEST_FROM]
    test = [rel[s] for s in files if s.isdigit() and int(s) >= GTSDB_TEST_FROM]
    splits = {"train": _split(root, train)}
    if test:
        splits["test"] = _split(root, test)

    def as_categories(sid):
        b = objects[sid].copy()
        b[:, 4] = [category_of[int(c)] for c in b[:, 4]]
        return b

    groups = [(cat, [c for c in range(43) if category_of[c] == k]) for k, cat in enumerate(categories)]
    targets = {"signs": detection_target("signs", gtsrb_class_names(), objects.__getitem__, groups,
                                         "every sign's box and its GTSRB class (43)"),
               "categories": detection_target("categories", categories, as_categories,
                                              description="every sign's box and its category (prohibitory, "
                                                          "danger, mandatory, other)")}
    return Dataset(name, root, "gtsdb", [], splits, targets=targets)


def _check_readme(path: Path, table: dict) -> None:
    """A ReadMe.txt beside the scenes must list the categories the package has: if the two
    disagree, the categories target would be silently wrong."""
    found = dict(re.findall(r"^\s*(\d+) = .* \((prohibitory|danger|mandatory|other)\)\s*$", dataset_text(path), re.M))
    for c, entry in table["classes"].items():
        if c in found and found[c] != entry["category"]:
            raise DatasetError(f"{path} puts class {c} in category {found[c]}; bottleneck's table "
                               f"(gtsdb_categories.json) puts it in {entry['category']}",
                               "check which is right before scoring categories; report it if the package is wrong")


def _lines(path: Path) -> list[str]:
    return dataset_text(path, "table").splitlines()


# ------------------------------------------------------------------ COCO JSON

def read_coco(what: str, name: str) -> Dataset:
    """``coco:FILE.json`` (one split, ``train``) or ``coco:FOLDER`` holding ``train.json`` and
    optionally ``val.json`` and ``test.json``. Images are found under ``images/`` beside the
    JSON files, or beside them. Classes: the ``categories`` in id order (the same in every file)."""
    path = Path(what).expanduser()
    if path.is_dir():
        files = {s: path / f"{s}.json" for s in ("train", "val", "test") if (path / f"{s}.json").is_file()}
        if "train" not in files:
            raise DatasetError(f"{path} has no train.json", "coco:FOLDER needs FOLDER/train.json (COCO format)")
        folder = path
    elif path.is_file():
        files, folder = {"train": path}, path.parent
    else:
        raise DatasetError(f"{path} does not exist", "coco:PATH names a COCO JSON file or a folder of them")
    root = folder / "images" if (folder / "images").is_dir() else folder
    splits, objects, class_names = {}, {}, None
    for split, file in files.items():
        names, rel, objs = _read_coco_file(file, root)
        if class_names is not None and names != class_names:
            raise DatasetError(f"{file} lists other categories than {files['train']}",
                               "give every split the same categories")
        class_names = names
        splits[split] = _split(root, rel)
        objects.update(objs)
    return Dataset(name, root, "coco", [], splits,
                   targets={"boxes": detection_target("boxes", class_names, objects.__getitem__)})


def _read_coco_file(file: Path, root: Path):
    try:
        doc = json.loads(dataset_text(file, "table"))
    except (json.JSONDecodeError, RecursionError) as e:
        raise DatasetError(f"{file} is not JSON: {str(e)[:200]}", "give the COCO annotations file") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "categories")):
        raise DatasetError(f"{file} has no 'images' and 'categories' lists", "give a COCO annotations file")
    cats = []
    for k, c in enumerate(doc["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise DatasetError(f"{file}: categories[{k}] needs an integer 'id' and a 'name'", "fix the category")
        cats.append((c["id"], c["name"]))
    cats.sort()
    if len({i for i, _ in cats}) != len(cats) or not cats:
        raise DatasetError(f"{file}: category ids must be unique, and there must be at least one", "fix categories")
    index = {cid: k for k, (cid, _) in enumerate(cats)}
    names = [n for _, n in cats]
    images, rel = {}, []
    for k, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or not isinstance(im.get("id"), int) or not isinstance(im.get("file_name"), str):
            raise DatasetError(f"{file}: images[{k}] needs an integer 'id' and a 'file_name'", "fix the entry")
        where = f"{file}, image id {im['id']}"
        if im["id"] in images:
            raise DatasetError(f"{where} is listed twice", "give each image one id")
        if not inside(root, im["file_name"]) or not is_file_there(root / im["file_name"]):
            raise DatasetError(f"{where}: the image {im['file_name']!r} is not under {root}",
                               "put the image there, or remove the entry")
        size = _size_of(root / im["file_name"], where)
        images[im["id"]] = (im["file_name"], size, [])
        rel.append(im["file_name"])
    if len(set(rel)) != len(rel):
        raise DatasetError(f"{file} lists one file under two image ids", "list each image once")
    for k, a in enumerate(doc.get("annotations") or []):
        if not isinstance(a, dict):
            raise DatasetError(f"{file}: annotations[{k}] is not an object", "fix the annotation")
        where = f"{file}, annotation id {a.get('id', f'#{k}')}"
        if a.get("image_id") not in images:
            raise DatasetError(f"{where}: image_id {a.get('image_id')!r} is no image of the file", "fix image_id")
        if a.get("category_id") not in index:
            raise DatasetError(f"{where}: unknown category_id {a.get('category_id')!r}; the categories are "
                               f"{', '.join(str(i) for i, _ in cats[:10])}", "fix category_id, or declare it")
        if a.get("iscrowd"):
            raise DatasetError(f"{where} is a crowd region (iscrowd 1); detection heads here learn single objects",
                               "remove crowd annotations, or give each object its own box")
        bbox = a.get("bbox")
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            raise DatasetError(f"{where}: bbox must be [x, y, width, height] numbers, got {str(bbox)[:60]}",
                               "fix the bbox")
        x, y, w, h = (float(v) for v in bbox)
        _, size, boxes = images[a["image_id"]]
        box = (x, y, x + w, y + h, index[a["category_id"]])
        check_box(box, size, len(names), where, names)
        boxes.append(box)
    return names, rel, {file_name: _clipped(boxes, size) for file_name, size, boxes in images.values()}


# ------------------------------------------------------------------ YOLO

def read_yolo(what: str, name: str) -> Dataset:
    """``yolo:FOLDER``: ``images/`` and ``labels/``, flat (one split, train) or in
    ``train/``, ``val/``, ``test/`` sub-folders; ``labels/X.txt`` holds image X's boxes, one
    ``class cx cy w h`` line each in fractions of the image (no file, or an empty one: no
    object). Class names: ``classes.txt`` (one a line) or ``data.yaml``'s ``names``."""
    root = Path(what).expanduser()
    if not (root / "images").is_dir() or not (root / "labels").is_dir():
        raise DatasetError(f"{root} is not a YOLO folder", "yolo:FOLDER needs FOLDER/images/ and FOLDER/labels/")
    names = _yolo_names(root)
    layout = {s: s for s in ("train", "val", "test") if (root / "images" / s).is_dir()} or {"train": ""}
    splits, objects = {}, {}
    for split, sub in layout.items():
        images = {f.stem: f for f in sorted((root / "images" / sub).iterdir())
                  if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES}
        labels = root / "labels" / sub
        for f in sorted(labels.iterdir()) if labels.is_dir() else []:
            if f.suffix == ".txt" and f.stem not in images:
                raise DatasetError(f"{f} is the label file of no image (no {f.stem}.* in {root / 'images' / sub})",
                                   "restore the image, or remove the label file")
        rel = []
        for stem, f in images.items():
            sid = str(f.relative_to(root))
            rel.append(sid)
            size = _size_of(f, str(f))
            boxes = []
            lab = labels / f"{stem}.txt"
            if is_file_there(lab):
                for n, line in enumerate(_lines(lab), 1):
                    if not line.strip():
                        continue
                    boxes.append(_yolo_box(line, size, names, f"{lab}, line {n}"))
            objects[sid] = _clipped(boxes, size)
        if not rel:
            raise DatasetError(f"{root / 'images' / sub} holds no images", "put the images there")
        splits[split] = _split(root, rel)
    return Dataset(name, root, "yolo", [], splits,
                   targets={"boxes": detection_target("boxes", names, objects.__getitem__)})


def _yolo_box(line: str, size, names, where: str):
    parts = line.split()
    if len(parts) != 5:
        raise DatasetError(f"{where}: {line.strip()[:80]!r} is not 'class cx cy w h'", "fix the line")
    try:
        c = int(parts[0])
        cx, cy, w, h = (float(p) for p in parts[1:])
    except ValueError:
        raise DatasetError(f"{where}: {line.strip()[:80]!r}: the class is a whole number and the box four numbers",
                           "fix the line") from None
    W, H = size
    box = ((cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H, c)
    check_box(box, size, len(names), where, names)
    return box


def _yolo_names(root: Path) -> list[str]:
    if (root / "classes.txt").is_file():
        names = [line.strip() for line in dataset_text(root / "classes.txt").splitlines() if line.strip()]
    elif (root / "data.yaml").is_file():
        import yaml

        try:
            doc = yaml.safe_load(dataset_text(root / "data.yaml"))  # safe_load: plain data, never an object
        except yaml.YAMLError as e:
            raise DatasetError(f"{root / 'data.yaml'} is not YAML: {str(e)[:200]}", "fix the file") from None
        raw = doc.get("names") if isinstance(doc, dict) else None
        if isinstance(raw, dict) and all(isinstance(k, int) for k in raw):
            raw = [raw[k] for k in sorted(raw)] if sorted(raw) == list(range(len(raw))) else None
        names = [str(n) for n in raw] if isinstance(raw, list) else []
    else:
        raise DatasetError(f"{root} names no classes", "add classes.txt (one name a line) or data.yaml with names:")
    if not names or len(set(names)) != len(names):
        raise DatasetError(f"the class names of {root} are empty or repeat a name",
                           "list each class once, in id order")
    return names
