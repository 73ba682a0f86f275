"""Copy the embedded subsets out of the unpacked ../shared/datasets archives (seeded, stratified).

Usage: mkdir /tmp/ds && tar -xzf ../shared/datasets/cifar10.tar.gz -C /tmp/ds &&
       tar -xzf ../shared/datasets/gtsrb-subset.tar.gz -C /tmp/ds && tar -xzf ../shared/datasets/camvid.tar.gz -C /tmp/ds &&
       tar -xzf ../shared/datasets/gtsdb.tar.gz -C /tmp/ds &&
       python data/make_subsets.py /tmp/ds
"""
import csv, shutil, random, sys
from pathlib import Path
SRC = Path(sys.argv[1]); DST = Path("data")
rng = random.Random(2026)
# CIFAR-10: 100 train / 50 test per class
for split, n in (("train", 100), ("test", 50)):
    for cdir in sorted((SRC / split).iterdir()):
        files = sorted(cdir.iterdir()); pick = sorted(rng.sample(files, n))
        out = DST / "cifar10" / split / cdir.name; out.mkdir(parents=True, exist_ok=True)
        for f in pick: shutil.copy2(f, out / f.name)
# GTSRB: 50 train / 20 test per class
g = DST / "gtsrb"; g.mkdir(parents=True, exist_ok=True)
shutil.copy2(SRC / "signnames.csv", g / "signnames.csv")


def gtsrb_subset(csv_name: str, per_class: int) -> None:
    """Copy per_class random rows of each class listed in csv_name, and write the shortened csv."""
    rows = list(csv.DictReader(open(SRC / csv_name)))
    keep = []
    for c in range(43):
        mine = [r for r in rows if int(r["ClassId"]) == c]
        keep += sorted(rng.sample(mine, per_class), key=lambda r: r["Path"])
    for r in keep:
        (g / r["Path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SRC / r["Path"], g / r["Path"])
    with open(g / csv_name, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)


gtsrb_subset("Train.csv", 50)
gtsrb_subset("Test.csv", 20)

# GTSRB's class icons and Meta.csv (shape and colour ids per class): the attribute table is checked against them.
shutil.copy2(SRC / "Meta.csv", g / "Meta.csv")
shutil.copytree(SRC / "Meta", g / "Meta", dirs_exist_ok=True)

# CamVid (when its archive is unpacked into SRC too): 12 train, 4 val, 8 test frames with their label maps.
if (SRC / "codes.txt").exists():
    crng = random.Random(2027)  # its own stream, so the subsets above stay as they were
    c = DST / "camvid"
    (c).mkdir(parents=True, exist_ok=True)
    shutil.copy2(SRC / "codes.txt", c / "codes.txt")
    for split, n in (("train", 12), ("val", 4), ("test", 8)):
        frames = sorted(p.stem for p in (SRC / "images" / split).iterdir())
        for stem in sorted(crng.sample(frames, n)):
            for kind, ext in (("images", ".jpg"), ("labels", ".png")):
                (c / kind / split).mkdir(parents=True, exist_ok=True)
                shutil.copy2(SRC / kind / split / (stem + ext), c / kind / split / (stem + ext))

# GTSDB (when its archive is unpacked into SRC too, as SRC/gtsdb): 16 train scenes (2 without a sign) and 8 test
# scenes, their lines of gt.txt, and ReadMe.txt (the categories are checked against it).
if (SRC / "gtsdb" / "gt.txt").exists():
    drng = random.Random(2028)
    s, d = SRC / "gtsdb", DST / "gtsdb"
    (d / "images").mkdir(parents=True, exist_ok=True)
    lines = [line for line in (s / "gt.txt").read_text().splitlines() if line.strip()]
    signed = sorted({line.split(";")[0][:5] for line in lines})
    scenes = sorted(p.stem for p in (s / "images").iterdir())
    empty = [n for n in scenes if n not in signed]
    pick = (drng.sample([n for n in signed if int(n) < 600], 14) + drng.sample([n for n in empty if int(n) < 600], 2)
            + drng.sample([n for n in signed if int(n) >= 600], 8))
    for n in sorted(pick):
        shutil.copy2(s / "images" / f"{n}.jpg", d / "images" / f"{n}.jpg")
    (d / "gt.txt").write_text("".join(f"{line}\n" for line in lines if line[:5] in pick))
    shutil.copy2(s / "ReadMe.txt", d / "ReadMe.txt")
