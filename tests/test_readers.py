"""Tests of source readers and image decoding (medlocker/data/readers.py, images.py)."""

from __future__ import annotations

import csv
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlocker.data.images import load_image, load_mask
from medlocker.data.readers import Record, open_source, sample_key
from medlocker.data.synth import GRADE_LESIONS
from medlocker.errors import BadInputError


def _rgb(h: int = 20, w: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# ---------------------------------------------------------------- layouts


def test_csv_layout_synthetic(synth_dataset_dir):
    src = open_source(synth_dataset_dir)
    assert src.root == str(synth_dataset_dir)
    assert src.classes == ("0", "1", "2", "3", "4")
    assert len(src.records) == 20
    assert [r.key for r in src.records] == sorted(r.key for r in src.records)
    with open(synth_dataset_dir / "labels.csv", newline="") as f:
        expected = {row["image"]: int(row["label"]) for row in csv.DictReader(f)}
    for r in src.records:
        assert isinstance(r, Record)
        assert src.classes[r.label] == str(expected[r.key])
        assert Path(r.path).is_file() and Path(r.path).parent.name == "images"
        types = sorted(Path(m).parent.name for m in r.masks)
        assert types == sorted(GRADE_LESIONS[expected[r.key]])
    # The CSV file itself can be passed too.
    assert open_source(synth_dataset_dir / "labels.csv").records == src.records


def test_aptos_layout(tmp_path):
    (tmp_path / "train_images").mkdir()
    rows = []
    for i, (code, diag) in enumerate([("000c1434d8d7", 2), ("001639a390f0", 4), ("0024cdab0c1e", 1), ("abc.v2", 0)]):
        Image.fromarray(_rgb(seed=i)).save(tmp_path / "train_images" / f"{code}.png")
        rows.append([code, diag])
    _write_csv(tmp_path / "train.csv", ["id_code", "diagnosis"], rows)
    src = open_source(tmp_path)
    assert src.classes == ("0", "1", "2", "4")
    by_key = {r.key: r for r in src.records}
    assert set(by_key) == {"000c1434d8d7", "001639a390f0", "0024cdab0c1e", "abc_v2"}  # dots -> '_'
    assert src.classes[by_key["001639a390f0"].label] == "4"
    assert by_key["abc_v2"].path.endswith("abc.v2.png")
    assert all(r.masks == () for r in src.records)


def test_csv_with_extensions_and_images_beside_it(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "a.jpg")
    Image.fromarray(_rgb(seed=1)).save(tmp_path / "b.tiff")
    _write_csv(tmp_path / "labels.csv", ["image_id", "label"], [["a.jpg", 10], ["b", 2]])
    src = open_source(tmp_path)
    assert src.classes == ("2", "10")  # numeric order, not string order
    assert {r.key: src.classes[r.label] for r in src.records} == {"a": "10", "b": "2"}


def test_image_folder_layout(tmp_path):
    for cls, names in {"severe": ["x.png", "sub/y.bmp"], "mild": ["z.jpeg"], "none": ["w.png"]}.items():
        for k, name in enumerate(names):
            p = tmp_path / cls / name
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_rgb(seed=k)).save(p)
    (tmp_path / "none" / "notes.txt").write_text("not an image")
    src = open_source(tmp_path)
    assert src.classes == ("mild", "none", "severe")
    assert {r.key: src.classes[r.label] for r in src.records} == {"x": "severe", "y": "severe", "z": "mild", "w": "none"}


def test_image_folder_skips_hidden_masks_and_empty_class_folders(tmp_path):
    """The torchvision walk keeps the reader's rules: no hidden files or folders, no masks/, no empty class."""
    for name in ("b/x.png", "b/.hidden.png", "a/y.PNG", ".cache/z.png", "empty/readme.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_rgb(seed=len(name))).save(tmp_path / name, format="PNG")
    (tmp_path / "masks" / "EX").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / "EX" / "x.png")
    src = open_source(tmp_path)
    assert src.classes == ("a", "b") and src.masks == str(tmp_path / "masks")
    assert [(r.key, src.classes[r.label], len(r.masks)) for r in src.records] == [("x", "b", 1), ("y", "a", 0)]


def test_idrid_masks_with_type_suffix(tmp_path):
    data = tmp_path / "grading"
    (data / "images").mkdir(parents=True)
    for name in ("IDRiD_01", "IDRiD_02"):
        Image.fromarray(_rgb()).save(data / "images" / f"{name}.jpg")
    _write_csv(data / "labels.csv", ["Image name", "Retinopathy grade", "Risk of macular edema"],
               [["IDRiD_01", 3, 1], ["IDRiD_02", 0, 0]])
    masks = tmp_path / "segmentation"
    lesion = np.zeros((20, 24), np.uint8)
    lesion[5:8, 6:9] = 255
    for folder, code in [("1. Microaneurysms", "MA"), ("2. Haemorrhages", "HE"), ("5. Optic Disc", "OD")]:
        (masks / folder).mkdir(parents=True)
        Image.fromarray(lesion).save(masks / folder / f"IDRiD_01_{code}.tif")
    Image.fromarray(lesion).save(masks / "1. Microaneurysms" / "IDRiD_99_MA.tif")  # no such image: ignored
    src = open_source(data, masks=masks)
    by_key = {r.key: r for r in src.records}
    # Optic disc skipped; masks sorted by path.
    assert [Path(m).name for m in by_key["IDRiD_01"].masks] == ["IDRiD_01_MA.tif", "IDRiD_01_HE.tif"]
    assert by_key["IDRiD_02"].masks == ()
    m = load_mask(by_key["IDRiD_01"].masks[0], (20, 24))
    assert m.sum() == 9 and m[5:8, 6:9].all()


def test_masks_folder_beside_image_folder_layout(tmp_path):
    (tmp_path / "1").mkdir()
    Image.fromarray(_rgb()).save(tmp_path / "1" / "eye.png")
    (tmp_path / "masks" / "EX").mkdir(parents=True)
    Image.fromarray(np.full((20, 24), 255, np.uint8)).save(tmp_path / "masks" / "EX" / "eye.png")
    src = open_source(tmp_path)
    assert src.classes == ("1",)  # masks/ is not a class
    (rec,) = src.records
    assert [Path(m).relative_to(tmp_path).as_posix() for m in rec.masks] == ["masks/EX/eye.png"]


def test_sample_key():
    assert sample_key("IDRiD_01") == "IDRiD_01"
    assert sample_key("scan 1.v2(left)") == "scan_1_v2_left_"
    with pytest.raises(ValueError):
        sample_key("")


def test_key_collision_names_both_files(tmp_path):
    (tmp_path / "0").mkdir()
    Image.fromarray(_rgb()).save(tmp_path / "0" / "a.b.png")
    Image.fromarray(_rgb()).save(tmp_path / "0" / "a_b.png")
    with pytest.raises(BadInputError) as exc:
        open_source(tmp_path)
    assert "a.b.png" in str(exc.value) and "a_b.png" in str(exc.value)


def test_missing_column(tmp_path):
    _write_csv(tmp_path / "labels.csv", ["image", "grade_of_something"], [["a", 1]])
    with pytest.raises(BadInputError, match="labels.csv.*column"):
        open_source(tmp_path)


def test_missing_image(tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(_rgb()).save(tmp_path / "images" / "present.png")
    _write_csv(tmp_path / "labels.csv", ["image", "label"], [["present", 0], ["absent_42", 1]])
    with pytest.raises(BadInputError) as exc:
        open_source(tmp_path)
    assert "absent_42" in str(exc.value) and "labels.csv" in str(exc.value)


def test_empty_sources(tmp_path):
    (tmp_path / "csv").mkdir()
    _write_csv(tmp_path / "csv" / "labels.csv", ["image", "label"], [])
    with pytest.raises(BadInputError, match="empty"):
        open_source(tmp_path / "csv")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(BadInputError, match="nothing"):
        open_source(tmp_path / "nothing")
    with pytest.raises(BadInputError, match="missing_dir"):
        open_source(tmp_path / "missing_dir")


# ---------------------------------------------------------------- decoding


def _png_bytes(tmp_path: Path) -> bytes:
    p = tmp_path / "ok.png"
    Image.fromarray(_rgb(40, 40)).save(p)
    return p.read_bytes()


def _assert_bad(path: Path, *words: str) -> None:
    with pytest.raises(BadInputError) as exc:
        load_image(path)
    msg = str(exc.value)
    assert path.name in msg
    for w in words:
        assert w in msg


def test_corrupt_png(tmp_path):
    data = bytearray(_png_bytes(tmp_path))
    idat = data.index(b"IDAT")
    for i in range(idat + 8, idat + 60):
        data[i] ^= 0x5A
    p = tmp_path / "corrupt.png"
    p.write_bytes(bytes(data))
    _assert_bad(p)


def test_truncated_png(tmp_path):
    data = _png_bytes(tmp_path)
    p = tmp_path / "truncated.png"
    p.write_bytes(data[: len(data) // 2])
    _assert_bad(p)


def test_text_file_named_png(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("patient list, not an image\n")
    _assert_bad(p)


def test_missing_file(tmp_path):
    _assert_bad(tmp_path / "nowhere.png", "not found")


def test_16bit_grayscale_png(tmp_path):
    p = tmp_path / "deep.png"
    Image.fromarray(np.full((10, 12), 40000, np.uint16)).save(p)
    _assert_bad(p, "8-bit")


def _write_png_rgb16(path: Path, h: int, w: int) -> None:
    """A 16-bit-per-channel RGB PNG, built by hand (Pillow cannot write one)."""
    raw = b"".join(b"\x00" + np.full((w, 3), 1234, ">u2").tobytes() for _ in range(h))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16bit_rgb_png(tmp_path):
    p = tmp_path / "deep_rgb.png"
    _write_png_rgb16(p, 6, 7)
    _assert_bad(p, "convert to 8-bit first")


def test_rgba_with_transparency_is_refused(tmp_path):
    rgba = np.dstack([_rgb(), np.full((20, 24), 255, np.uint8)])
    rgba[3, 4, 3] = 0
    p = tmp_path / "see_through.png"
    Image.fromarray(rgba, "RGBA").save(p)
    _assert_bad(p, "transparent")


def test_opaque_alpha_is_dropped(tmp_path):
    rgb = _rgb()
    p = tmp_path / "opaque.png"
    Image.fromarray(np.dstack([rgb, np.full((20, 24), 255, np.uint8)]), "RGBA").save(p)
    np.testing.assert_array_equal(load_image(p), rgb)
    gray = rgb[..., 0]
    q = tmp_path / "opaque_la.png"
    Image.fromarray(np.dstack([gray, np.full((20, 24), 255, np.uint8)]), "LA").save(q)
    np.testing.assert_array_equal(load_image(q), np.repeat(gray[..., None], 3, axis=2))


def test_grayscale_and_palette_become_rgb(tmp_path):
    gray = _rgb()[..., 1]
    p = tmp_path / "gray.png"
    Image.fromarray(gray, "L").save(p)
    out = load_image(p)
    assert out.shape == (20, 24, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))
    q = tmp_path / "palette.png"
    Image.fromarray(_rgb()).convert("P").save(q)
    assert load_image(q).shape == (20, 24, 3)


def test_odd_size_and_formats_round_trip(tmp_path):
    rgb = _rgb(97, 131)
    for ext in ("png", "bmp", "tif"):
        p = tmp_path / f"odd.{ext}"
        Image.fromarray(rgb).save(p)
        out = load_image(p)
        assert out.flags.writeable
        np.testing.assert_array_equal(out, rgb)
    p = tmp_path / "odd.jpg"
    Image.fromarray(rgb).save(p, quality=95)
    assert load_image(p).shape == (97, 131, 3)


def test_exif_orientation_is_not_applied(tmp_path):
    p = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(_rgb(20, 40)).save(p, exif=exif)
    assert load_image(p).shape == (20, 40, 3)


def test_load_mask_resizes_nearest_and_reads_colour_masks(tmp_path):
    m = np.zeros((10, 10, 3), np.uint8)
    m[0:5, 0:5, 0] = 255  # a red lesion, as in IDRiD's colour masks
    p = tmp_path / "m.png"
    Image.fromarray(m).save(p)
    same = load_mask(p, (10, 10))
    assert same.dtype == bool and same.sum() == 25
    big = load_mask(p, (20, 30))
    assert big.shape == (20, 30) and big[:10, :15].all() and not big[10:].any() and not big[:, 15:].any()
    bad = tmp_path / "bad_mask.png"
    bad.write_bytes(b"nope")
    with pytest.raises(BadInputError, match="bad_mask.png"):
        load_mask(bad, (10, 10))


def test_with_a_mask_folder_an_image_without_masks_is_lesion_free(tmp_path) -> None:
    from medlocker.data import write_synthetic_dataset
    from medlocker.pack import _load

    root = write_synthetic_dataset(tmp_path / "ds", n=10, size=48, seed=2, progress=False)
    source = open_source(root)
    assert source.masks == str(root / "masks")
    healthy = [r for r in source.records if not r.masks]
    sick = [r for r in source.records if r.masks]
    assert healthy and sick  # grade 0 images have no mask file
    assert _load(healthy[0], None, masked=True)[1] == []
    assert _load(sick[0], None, masked=True)[1]
    # without a mask folder nothing is known: the packer falls back to Grad-CAM
    import shutil

    shutil.rmtree(root / "masks")
    bare = open_source(root)
    assert bare.masks is None and all(not r.masks for r in bare.records)
    assert _load(bare.records[0], None, masked=bare.masks is not None)[1] is None
