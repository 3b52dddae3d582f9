"""Tests of the synthetic DR generator (medlocker/data/synth.py)."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from medlocker.data.synth import (
    GRADE_LESIONS,
    LESION_TYPES,
    generate_fundus,
    synthetic_id,
    synthetic_label,
    write_synthetic_dataset,
)


def _digest(sample) -> str:
    h = hashlib.sha256(sample.image.tobytes())
    for code in sorted(sample.masks):
        h.update(code.encode())
        h.update(np.packbits(sample.masks[code]).tobytes())
    return h.hexdigest()


def test_same_seed_and_index_give_identical_bytes():
    a = generate_fundus(3, 11, 64)
    b = generate_fundus(3, 11, 64)
    assert a.label == b.label
    assert _digest(a) == _digest(b)


def test_image_depends_only_on_seed_and_index():
    # Generating other images first (any order) does not change image 4.
    alone = generate_fundus(5, 4, 48)
    for i in (9, 0, 3):
        generate_fundus(5, i, 48)
    again = generate_fundus(5, 4, 48)
    assert _digest(alone) == _digest(again)


def test_different_seeds_and_indices_differ():
    base = generate_fundus(0, 0, 64)
    assert not np.array_equal(base.image, generate_fundus(1, 0, 64).image)
    assert not np.array_equal(base.image, generate_fundus(0, 1, 64).image)


def test_image_shape_dtype_and_field_of_view():
    s = generate_fundus(0, 2, 64)
    assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
    # Corners are outside the circular field of view: (near) black. Centre is bright.
    assert s.image[:3, :3].max() <= 12
    assert s.image[28:36, 28:36].mean() > 30


@pytest.mark.parametrize("index", range(10))
def test_masks_are_non_empty_exactly_for_the_lesions_of_the_grade(index):
    s = generate_fundus(2, index, 64)
    assert set(s.masks) == set(GRADE_LESIONS[s.label])
    for code, mask in s.masks.items():
        assert code in LESION_TYPES
        assert mask.dtype == bool and mask.shape == (64, 64)
        assert mask.any(), code
        assert not mask.all(), code


def test_lesions_change_the_pixels_under_their_masks():
    # Haemorrhages and microaneurysms darken, exudates brighten (relative to the
    # image's own background), so the masks point at visible structures.
    for i in range(15):
        s = generate_fundus(4, i, 96)
        if s.label < 2:
            continue
        lum = s.image.astype(np.float32).mean(-1)
        inside = s.image.sum(-1) > 60
        background = np.median(lum[inside])
        assert lum[s.masks["HE"]].mean() < background
        assert lum[s.masks["EX"]].mean() > background
        return
    pytest.fail("no grade >= 2 image among the first 15")


def test_labels_are_balanced_per_block_of_five():
    labels = [synthetic_label(9, i) for i in range(50)]
    for k in range(0, 50, 5):
        assert sorted(labels[k : k + 5]) == [0, 1, 2, 3, 4]
    assert labels != [synthetic_label(10, i) for i in range(50)]  # the order depends on the seed


@pytest.mark.parametrize("size", [17, 33, 97])
def test_odd_sizes(size):
    for i in range(5):
        s = generate_fundus(1, i, size)
        assert s.image.shape == (size, size, 3)
        for mask in s.masks.values():
            assert mask.shape == (size, size) and mask.any()


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError):
        generate_fundus(-1, 0, 64)
    with pytest.raises(ValueError):
        generate_fundus(0, -2, 64)
    with pytest.raises(ValueError):
        generate_fundus(0, 0, 8)


def test_written_layout(tmp_path):
    root = write_synthetic_dataset(tmp_path / "ds", n=7, size=40, seed=1, progress=False)
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == [synthetic_id(i) for i in range(7)]
    assert all("." not in r["image"] for r in rows)
    assert Counter(int(r["label"]) for r in rows) == Counter([0, 1, 2, 3, 4, *[synthetic_label(1, i) for i in (5, 6)]])
    for i, r in enumerate(rows):
        sample = generate_fundus(1, i, 40)
        with Image.open(root / "images" / f"{r['image']}.png") as im:
            assert im.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(im), sample.image)
        for code in LESION_TYPES:
            mask_file = root / "masks" / code / f"{r['image']}.png"
            assert mask_file.exists() == (code in GRADE_LESIONS[int(r["label"])])
            if mask_file.exists():
                with Image.open(mask_file) as m:
                    assert m.mode == "L" and m.size == (40, 40)
                    arr = np.asarray(m)
                assert set(np.unique(arr)) <= {0, 255}
                np.testing.assert_array_equal(arr == 255, sample.masks[code])


def test_writing_twice_gives_the_same_bytes(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", n=3, size=32, seed=4, progress=False)
    b = write_synthetic_dataset(tmp_path / "b", n=3, size=32, seed=4, progress=False)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_workers_do_not_change_the_dataset(tmp_path) -> None:
    one = write_synthetic_dataset(tmp_path / "one", n=6, size=32, seed=3, progress=False)
    two = write_synthetic_dataset(tmp_path / "two", n=6, size=32, seed=3, progress=False, workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
