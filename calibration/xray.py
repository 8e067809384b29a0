"""Chest X-ray data for V-BreathNet: two public sets combined against their confounds, the listed
near-duplicates dropped, and a seeded held-out split with no near-identical image of a training
image (256-bit dHash).

Sources (read both SOURCE.md files):
- `chest_xray_covid19_3class/` (Kaggle 3-way set): COVID = adult images from papers/web
  (ieee8023), Normal and Viral Pneumonia = paediatric (Kermany, Guangzhou). Alone, "child" means
  "not COVID" and the source predicts the class.
- `covid19_radiography_db_subset/`: COVID (adult, BIMCV/PadChest/Hannover/SIRM...), adult
  Normal (RSNA) and paediatric Normal (Kermany, `extra_normal_paediatric/`, kept apart upstream).

Combined, four cells (class x age); the training sampler draws them equally
(`CELLS`), so that within each age group the two possible classes are 50/50:
    paediatric: Normal (Kermany, both sets) vs Viral Pneumonia (Kermany)  -> same hospital
    adult:      Normal (RSNA)               vs COVID-19 (mixed European/web sources)
What cannot be removed: no adult viral pneumonia and no paediatric COVID exist in the data (age
still rules one class out), and in adults the hospital still predicts the class (RSNA = Normal).
See XRAY_MODEL_CARD.md.

Resolution is harmonised: the radiography subset was downsampled to 224x224 upstream, the 3-way
set resized to 640x640; `load_grey` first brings every image to 224x224 (INTER_AREA) so that
sharpness does not tell the two sets (hence Viral Pneumonia) apart.

Split list (TSV, paths relative to the data root, so it is portable): split, label, cell, source,
path, dhash (hex). `python -m edgecell.calibration.xray --out DIR --seed 0` writes it.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from edgecell.calibration import data_root, dataset_dir
from edgecell.calibration.folders import list_split

SET_3CLASS = "chest_xray_covid19_3class"
SET_DB = "covid19_radiography_db_subset"
LABELS = ("COVID-19", "Normal", "Viral Pneumonia")
FOLDER_LABEL = {"Covid": "COVID-19", "COVID": "COVID-19", "Normal": "Normal", "Viral Pneumonia": "Viral Pneumonia"}
CELLS = ("COVID-19/adult", "Normal/adult", "Normal/paediatric", "Viral Pneumonia/paediatric")
HARMONISE = 224  # px: every image first goes to this size (the radiography subset's own size)
DUP_THRESHOLD = 12  # Hamming distance (of 256 bits) at or under which two images are near-identical


@dataclass
class Item:
    path: Path  # absolute
    rel: str  # relative to the data root (what the list file stores)
    label: str
    cell: str  # "<label>/<age>"
    source: str  # "3class-web", "3class-kermany", "db-covid", "db-rsna", "db-kermany"
    split: str = ""
    dhash: int = 0

    @property
    def label_index(self) -> int:
        return LABELS.index(self.label)


# ----------------------------------------------------------------------------- sources

def excluded_names(db_dir: Path) -> set[str]:
    """Upstream file names listed in excluded_near_duplicates.tsv (e.g. "COVID-363.png")."""
    tsv = db_dir / "excluded_near_duplicates.tsv"
    if not tsv.is_file():
        return set()
    with tsv.open() as f:
        return {Path(r["upstream_file"]).name for r in csv.DictReader(f, delimiter="\t")}


def collect(data: str | os.PathLike | None = None) -> tuple[list[Item], dict]:
    """Every usable image of both sets, with label, cell and source; near-duplicates listed by the
    radiography subset dropped. Returns (items, notes with counts)."""
    root = data_root(data)
    a = dataset_dir(SET_3CLASS, root) / "Covid19-dataset"
    b = dataset_dir(SET_DB, root)
    items: list[Item] = []
    for split in ("train", "val"):
        for path, idx in list_split(a, split):
            folder = path.parent.name
            label = FOLDER_LABEL[folder]
            age = "adult" if label == "COVID-19" else "paediatric"
            src = "3class-web" if label == "COVID-19" else "3class-kermany"
            items.append(Item(path, str(path.relative_to(root)), label, f"{label}/{age}", src))
        for path, idx in list_split(b, split):
            label = FOLDER_LABEL[path.parent.name]
            src = "db-covid" if label == "COVID-19" else "db-rsna"
            items.append(Item(path, str(path.relative_to(root)), label, f"{label}/adult", src))
    for split in ("train", "val"):
        folder = b / "extra_normal_paediatric" / split
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
                items.append(Item(path, str(path.relative_to(root)), "Normal", "Normal/paediatric", "db-kermany"))
    excluded = excluded_names(b)
    kept = [it for it in items if not (it.source.startswith("db-") and it.path.name in excluded)]
    notes = {"listed_near_duplicates": len(excluded), "listed_found_and_dropped": len(items) - len(kept)}
    return kept, notes


#: Sites (upstream collections) a film comes from, as far as the file names let us tell; the unit
#: of the cross-source evaluation (a site is held out whole).
SITES = ("covid-web", "covid-padchest", "rsna", "kermany")
#: COVID-n.png of the radiography database with n above this came with its second release (3616
#: COVID films, 2473 of them PadChest/BIMCV); n <= 1200 are the first two releases (SIRM, ieee8023,
#: Hannover, COVID-CXNet: web and paper images). Inferred from the upstream README's release
#: history, not from metadata (the copy has none).
DB_FIRST_RELEASES = 1200


def site_of(item: Item) -> str:
    """The site of a film (see SITES): the 3-way set's COVID films and the radiography database's
    COVID-1..1200 are web/paper collections ("covid-web"); COVID-1201.. are PadChest/BIMCV
    ("covid-padchest", Spain); the database's adult normals are RSNA/NIH ("rsna", USA); every
    paediatric film is Kermany's (Guangzhou)."""
    if item.cell.endswith("/paediatric"):
        return "kermany"
    if item.source == "db-rsna":
        return "rsna"
    if item.source == "db-covid":
        digits = "".join(ch for ch in Path(item.rel).stem.split("-")[-1] if ch.isdigit())
        return "covid-padchest" if digits and int(digits) > DB_FIRST_RELEASES else "covid-web"
    return "covid-web"


# ----------------------------------------------------------------------------- images and hashes

def load_grey(path: str | os.PathLike, size: int = HARMONISE) -> np.ndarray:
    """Decoded image as grey uint8, harmonised to size x size (stretched, INTER_AREA)."""
    from edgecell.images import decode_image

    grey = cv2.cvtColor(decode_image(path), cv2.COLOR_RGB2GRAY)
    interp = cv2.INTER_AREA if grey.shape[0] > size or grey.shape[1] > size else cv2.INTER_LINEAR
    return cv2.resize(grey, (size, size), interpolation=interp)


def dhash(grey: np.ndarray) -> int:
    """256-bit difference hash: 17x16 grey thumbnail, each pixel brighter than its right neighbour."""
    small = cv2.resize(grey, (17, 16), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).reshape(-1)
    return int("".join("1" if b else "0" for b in bits), 2)


def _hash_bytes(hashes: Sequence[int]) -> np.ndarray:
    return np.array([list(h.to_bytes(32, "big")) for h in hashes], dtype=np.uint8)


def hamming_matrix(a: Sequence[int], b: Sequence[int]) -> np.ndarray:
    """Pairwise Hamming distances between two lists of 256-bit hashes (int16 matrix)."""
    ab, bb = _hash_bytes(a), _hash_bytes(b)
    out = np.zeros((len(a), len(b)), np.int16)
    for i in range(0, len(a), 256):
        x = np.bitwise_xor(ab[i:i + 256, None, :], bb[None, :, :])
        out[i:i + 256] = np.unpackbits(x, axis=2).sum(axis=2)
    return out


def near_duplicate_groups(hashes: Sequence[int], threshold: int = DUP_THRESHOLD) -> np.ndarray:
    """Group id per image: images linked by a chain of distances <= threshold share a group."""
    n = len(hashes)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    d = hamming_matrix(hashes, hashes)
    ii, jj = np.nonzero(np.triu(d <= threshold, k=1))
    for i, j in zip(ii.tolist(), jj.tolist()):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[rj] = ri
    return np.array([find(i) for i in range(n)])


# ----------------------------------------------------------------------------- split

def make_split(items: list[Item], *, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1,
               threshold: int = DUP_THRESHOLD) -> dict:
    """Assign item.split in {"train", "val", "test"}: whole near-duplicate groups go to one split,
    drawn with `seed` per cell (class x age) and source, so every stratum keeps its share.
    Needs item.dhash set. Returns notes (group counts, the closest test-train distance)."""
    groups = near_duplicate_groups([it.dhash for it in items], threshold)
    rng = np.random.default_rng(seed)
    strata: dict[str, list[int]] = {}
    for gid in sorted(set(groups.tolist())):
        members = np.nonzero(groups == gid)[0]
        key = items[members[0]].cell + "|" + items[members[0]].source
        strata.setdefault(key, []).append(gid)
    assign: dict[int, str] = {}
    for key in sorted(strata):
        gids = strata[key]
        order = rng.permutation(len(gids))
        n_test = int(round(len(gids) * test_fraction))
        n_val = int(round(len(gids) * val_fraction))
        for rank, k in enumerate(order.tolist()):
            assign[gids[k]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    for it, gid in zip(items, groups.tolist()):
        it.split = assign[gid]
    sizes = np.bincount(np.unique(groups, return_inverse=True)[1])
    return {"groups": int(len(sizes)), "images_in_multi_image_groups": int(sizes[sizes > 1].sum()),
            "largest_group": int(sizes.max()), **leak_check(items)}


def leak_check(items: list[Item]) -> dict:
    """Closest dHash distance from any held-out image to any train/val image."""
    test = [it.dhash for it in items if it.split == "test"]
    rest = [it.dhash for it in items if it.split in ("train", "val")]
    if not test or not rest:
        return {"min_test_train_distance": None}
    d = hamming_matrix(test, rest).min(axis=1)
    return {"min_test_train_distance": int(d.min()), "test_within_20_of_train": int((d <= 20).sum())}


def write_list(path: str | os.PathLike, items: list[Item]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["split", "label", "cell", "source", "path", "dhash"])
        for it in sorted(items, key=lambda i: (i.split, i.label, i.rel)):
            w.writerow([it.split, it.label, it.cell, it.source, it.rel, f"{it.dhash:064x}"])
    os.replace(tmp, path)
    return path


def read_list(path: str | os.PathLike, data: str | os.PathLike | None = None) -> list[Item]:
    root = data_root(data)
    with Path(path).open() as f:
        return [Item(root / r["path"], r["path"], r["label"], r["cell"], r["source"], r["split"], int(r["dhash"], 16))
                for r in csv.DictReader(f, delimiter="\t")]


def build(data: str | os.PathLike | None = None, *, seed: int = 0, clean: bool = True, progress=None,
          keep_images: bool = False) -> tuple[list[Item], dict, dict[str, np.ndarray]]:
    """collect -> harmonised grey images -> dHash -> quality cleaning (train/val only) -> split.
    Returns (items, notes, {rel: grey 224x224} when keep_images)."""
    from edgecell.quality import check_quality

    items, notes = collect(data)
    images: dict[str, np.ndarray] = {}
    flagged: dict[str, list[str]] = {}
    for k, it in enumerate(items):
        grey = load_grey(it.path)
        it.dhash = dhash(grey)
        if clean:
            q = check_quality(grey, min_side=0)  # harmonised copies: size says nothing; judge the pixels
            if q.flags:
                flagged[it.rel] = q.flags
        if keep_images:
            images[it.rel] = grey
        if progress is not None:
            progress(k + 1, len(items))
    notes.update(make_split(items, seed=seed))
    dropped = [it for it in items if it.rel in flagged and it.split != "test"]
    notes["quality_dropped_train_val"] = {it.rel: flagged[it.rel] for it in dropped}
    notes["quality_flagged_test_kept"] = {it.rel: flagged[it.rel] for it in items if it.rel in flagged and it.split == "test"}
    items = [it for it in items if not (it.rel in flagged and it.split != "test")]
    counts: dict[str, dict[str, int]] = {}
    for it in items:
        counts.setdefault(it.split, {}).setdefault(it.cell, 0)
        counts[it.split][it.cell] += 1
    notes["counts"] = counts
    notes["seed"] = seed
    return items, notes, images


def heldout_folder(items: Sequence[Item], out: Path) -> Path:
    """`out/heldout/test/<label>/<source>__<name>` symlinks to the held-out originals, the class-folder
    layout `evaluate_classifier` reads (no image is copied)."""
    root = Path(out) / "heldout"
    for it in items:
        if it.split != "test":
            continue
        link = root / "test" / it.label / (it.source + "__" + it.rel.replace("/", "_"))
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(it.path)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    import json

    p = argparse.ArgumentParser(prog="python -m edgecell.calibration.xray",
                                description="Combine the two chest X-ray sets and write the split list.")
    p.add_argument("--data", help="data root (holds chest_xray_covid19_3class/ and covid19_radiography_db_subset/)")
    p.add_argument("--out", required=True, help="folder for xray_split.tsv and xray_split_notes.json")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    items, notes, _ = build(args.data, seed=args.seed)
    out = Path(args.out)
    write_list(out / "xray_split.tsv", items)
    (out / "xray_split_notes.json").write_text(json.dumps(notes, indent=1) + "\n")
    print(json.dumps({k: v for k, v in notes.items() if not k.startswith("quality")}, indent=1))
    print(f"quality: dropped {len(notes['quality_dropped_train_val'])} train/val images, "
          f"{len(notes['quality_flagged_test_kept'])} held-out images flagged (kept)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
