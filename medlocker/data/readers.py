"""Find the images, labels and lesion masks of a source dataset.

``open_source`` recognises the layouts the public DR datasets ship in:

* **CSV**: a folder with ``labels.csv`` (or its only ``*.csv``), or the CSV
  file itself. Columns ``image,label`` (MedLocker, synthetic data), APTOS 2019's
  ``id_code,diagnosis``, EyePACS' ``image,level``, IDRiD's ``Image name,
  Retinopathy grade``; ``id``/``image_id`` are accepted for the image column.
  Images are looked up, with or without extension, in ``images/``,
  ``train_images/`` or beside the CSV.
* **ImageFolder**: one sub-folder per class (classes sorted by name),
  searched recursively.
* **Lesion masks** (optional, with either layout): the ``masks`` argument or a
  ``masks/`` folder beside the images, IDRiD style ``masks/<lesion type>/<id>.png``
  or IDRiD's own naming ``<lesion type folder>/<id>_MA.tif``. Optic-disc masks
  (``OD``) are not lesions and are skipped.

Only file names are read here; images are decoded later by
:func:`medlocker.data.images.load_image`. Sample keys are file stems made safe
for WebDataset (``[A-Za-z0-9_-]``; any other character, dots included, becomes
``_``).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from medlocker.data.images import IMAGE_EXTENSIONS
from medlocker.errors import BadInputError

__all__ = ["Record", "Source", "open_source", "sample_key"]

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image", "id_code", "id", "image_id", "image name", "image_name", "filename", "file")
LABEL_COLUMNS = ("label", "diagnosis", "level", "retinopathy grade", "grade", "class")
IMAGE_DIRS = ("images", "train_images", ".")
MASKS_DIR = "masks"
_NOT_LESIONS = ("OD",)  # optic-disc masks: anatomy, not a lesion
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_TYPE_SUFFIX = re.compile(r"^(?P<key>.+)_(?P<code>[A-Za-z]{2,4})$")


@dataclass(frozen=True)
class Record:
    """One source sample.

    Attributes:
        key: sample key, unique in its source, ``[A-Za-z0-9_-]`` only.
        path: image file.
        label: class index into ``Source.classes``.
        masks: lesion mask files for this image (any lesion type), sorted.
    """

    key: str
    path: str
    label: int
    masks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Source:
    """A labelled image dataset on local disk.

    Attributes:
        root: the folder the source was opened from.
        records: samples, sorted by key.
        classes: class names; a record's label indexes this tuple.
        masks: the lesion mask folder, when the source has one. Then an image with no
            mask file has no lesions (the IDRiD convention: healthy images have no masks);
            without a mask folder, lesion boxes come from Grad-CAM.
    """

    root: str
    records: tuple[Record, ...]
    classes: tuple[str, ...]
    masks: str | None = None


def sample_key(name: str) -> str:
    """A WebDataset-safe key from a file stem: unsafe characters and dots become ``_``."""
    key = _UNSAFE.sub("_", name)
    if not key:
        raise ValueError(f"cannot make a sample key from {name!r}")
    return key


def open_source(path: str | os.PathLike[str], *, masks: str | os.PathLike[str] | None = None) -> Source:
    """Open a labelled image dataset, detecting its layout.

    Args:
        path: dataset folder (CSV or ImageFolder layout), or a CSV file.
        masks: lesion mask folder; default ``<root>/masks`` when it exists.

    Returns:
        The source, records sorted by key.

    Raises:
        BadInputError: no CSV and no class folders, a CSV without the needed
            columns, an image listed but missing, two files with the same key,
            or an empty dataset. The message names the file and what to do.
    """
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{p}: no such file or folder; pass a dataset folder or its labels CSV")
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise BadInputError(f"{p}: not a CSV file; pass a dataset folder or its labels CSV")
        root, csv_path = p.parent, p
    else:
        root, csv_path = p, _find_csv(p)

    if csv_path is not None:
        records, classes = _read_csv_layout(root, csv_path)
    else:
        records, classes = _read_image_folder(root)
    if not records:
        raise BadInputError(f"{p}: the dataset is empty; add labelled images")

    mask_root = Path(masks) if masks is not None else root / MASKS_DIR
    if masks is not None and not mask_root.is_dir():
        raise BadInputError(f"{mask_root}: mask folder not found; pass the folder holding <lesion type>/<id>.png")
    has_masks = mask_root.is_dir()
    if has_masks:
        records = _attach_masks(records, mask_root)
    return Source(root=str(root), records=tuple(sorted(records, key=lambda r: r.key)), classes=classes,
                  masks=str(mask_root) if has_masks else None)


# ---------------------------------------------------------------- CSV layout


def _find_csv(root: Path) -> Path | None:
    if (root / "labels.csv").is_file():
        return root / "labels.csv"
    found = sorted(q for q in root.iterdir() if q.is_file() and q.suffix.lower() == ".csv")
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(q.name for q in found)
        raise BadInputError(f"{root}: several CSV files ({names}); name the labels file labels.csv or pass it directly")
    return None


def _pick(fieldnames: list[str], wanted: tuple[str, ...]) -> str | None:
    norm = {f.strip().lower(): f for f in fieldnames}
    for w in wanted:
        if w in norm:
            return norm[w]
    return None


def _read_csv_layout(root: Path, csv_path: Path) -> tuple[list[Record], tuple[str, ...]]:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            image_col, label_col = _pick(fields, IMAGE_COLUMNS), _pick(fields, LABEL_COLUMNS)
            if image_col is None or label_col is None:
                raise BadInputError(
                    f"{csv_path}: missing column(s) -- found {fields or 'no header'}; expected an image column "
                    f"({' / '.join(IMAGE_COLUMNS[:4])}) and a label column ({' / '.join(LABEL_COLUMNS[:3])}), "
                    "e.g. a header line 'image,label'"
                )
            rows = []
            for line, row in enumerate(reader, start=2):
                name = (row.get(image_col) or "").strip()
                label = (row.get(label_col) or "").strip()
                if not name and not label:
                    continue  # blank line
                if not name or not label:
                    raise BadInputError(f"{csv_path}, line {line}: empty {image_col if not name else label_col!r} cell")
                rows.append((line, name, label))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInputError(f"{csv_path}: cannot read the labels CSV ({exc}); save it as UTF-8 CSV") from None

    classes = _classes(label for _, _, label in rows)
    index = {c: i for i, c in enumerate(classes)}
    lookup = _ImageIndex(csv_path.parent)
    records: list[Record] = []
    seen: dict[str, str] = {}
    for line, name, label in rows:
        image = lookup.find(name)
        if image is None:
            raise BadInputError(
                f"{csv_path}, line {line}: image {name!r} not found in "
                f"{', '.join(str(d) for d in lookup.dirs)}; put the images in images/ beside the CSV"
            )
        key = sample_key(Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTENSIONS else Path(name).name)
        _claim(seen, key, str(image))
        records.append(Record(key=key, path=str(image), label=index[_norm_label(label)]))
    return records, classes


def _norm_label(label: str) -> str:
    try:
        return str(int(label))
    except ValueError:
        try:
            f = float(label)
        except ValueError:
            return label
        return str(int(f)) if f.is_integer() else label


def _classes(labels: Iterable[str]) -> tuple[str, ...]:
    """Distinct labels, numeric ones sorted as numbers ("2" before "10")."""
    distinct = {_norm_label(x) for x in labels}

    def order(c: str) -> tuple[int, float, str]:
        try:
            return (0, float(int(c)), c)
        except ValueError:
            return (1, 0.0, c)

    return tuple(sorted(distinct, key=order))


class _ImageIndex:
    """Resolves CSV image names against images/, train_images/ and the CSV folder."""

    def __init__(self, base: Path) -> None:
        self.dirs = [base / d if d != "." else base for d in IMAGE_DIRS if (base / d).is_dir()]
        self._by_stem: dict[str, list[Path]] = {}
        for d in self.dirs:
            for q in sorted(d.iterdir()):
                if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS:
                    self._by_stem.setdefault(q.stem, []).append(q)

    def find(self, name: str) -> Path | None:
        for d in self.dirs:
            direct = d / name
            if direct.is_file() and direct.suffix.lower() in IMAGE_EXTENSIONS:
                return direct
        stem = Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTENSIONS else Path(name).name
        hits = self._by_stem.get(stem, [])
        return hits[0] if hits else None


# ---------------------------------------------------------------- ImageFolder layout


def _read_image_folder(root: Path) -> tuple[list[Record], tuple[str, ...]]:
    """torchvision's ImageFolder walk, less hidden folders, ``masks/`` and classes without images."""
    from torchvision.datasets.folder import find_classes, make_dataset

    try:
        names = [c for c in find_classes(root)[0] if not c.startswith(".") and c != MASKS_DIR]
    except FileNotFoundError:
        names = []
    if not names:
        raise BadInputError(
            f"{root}: no labels CSV and no class folders; use labels.csv with columns image,label "
            "or one sub-folder of images per class"
        )
    found = make_dataset(root, {c: i for i, c in enumerate(names)}, allow_empty=True, is_valid_file=lambda q: not (
        os.path.basename(q).startswith(".") or os.path.splitext(q)[1].lower() not in IMAGE_EXTENSIONS))
    present = sorted({i for _, i in found})  # an empty class folder is not a class
    label = {i: n for n, i in enumerate(present)}
    records: list[Record] = []
    seen: dict[str, str] = {}
    for path, i in found:
        key = sample_key(Path(path).stem)
        _claim(seen, key, path)
        records.append(Record(key=key, path=path, label=label[i]))
    return records, tuple(names[i] for i in present)


def _claim(seen: dict[str, str], key: str, path: str) -> None:
    if key in seen:
        raise BadInputError(
            f"{seen[key]} and {path} both map to sample key {key!r}; rename one of them "
            "(keys are file stems with characters outside [A-Za-z0-9_-] replaced by '_')"
        )
    seen[key] = path


# ---------------------------------------------------------------- masks


def _attach_masks(records: list[Record], mask_root: Path) -> list[Record]:
    keys = {r.key for r in records}
    found: dict[str, list[str]] = {}
    unmatched = 0
    for q in sorted(mask_root.rglob("*")):
        if not q.is_file() or q.suffix.lower() not in IMAGE_EXTENSIONS or q.name.startswith("."):
            continue
        folder = q.parent.name.lower()
        if "optic disc" in folder or folder == "od":
            continue
        key = sample_key(q.stem)
        if key not in keys:
            m = _TYPE_SUFFIX.match(key)  # IDRiD: IDRiD_01_MA.tif
            if m and m.group("code").upper() in _NOT_LESIONS:
                continue
            key = m.group("key") if m and m.group("key") in keys else None
        if key is None:
            unmatched += 1
            continue
        found.setdefault(key, []).append(str(q))
    if unmatched:
        log.warning("%s: %d mask file(s) match no image in the source and were ignored", mask_root, unmatched)
    return [
        Record(key=r.key, path=r.path, label=r.label, masks=tuple(sorted(found.get(r.key, ())))) for r in records
    ]
