"""Tests of the synthetic DR generator (medlocker/data/synth/)."""

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
    for i in range(10):
        img = generate_fundus(0, i, 64).image
        for corner in (img[:3, :3], img[:3, -3:], img[-3:, :3], img[-3:, -3:]):
            assert corner.max() <= 12, i
        assert img[28:36, 28:36].mean() > 30


@pytest.mark.parametrize("index", range(10))
def test_masks_are_non_empty_exactly_for_the_lesions_of_the_grade(index):
    s = generate_fundus(2, index, 64)
    assert set(s.masks) == set(GRADE_LESIONS[s.label])
    for code, mask in s.masks.items():
        assert code in LESION_TYPES
        assert mask.dtype == bool and mask.shape == (64, 64)
        assert mask.any(), code
        assert not mask.all(), code


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` px of ``mask`` (a square dilation), not in it."""
    grown = mask.copy()
    for _ in range(width):
        g = grown.copy()
        g[1:] |= grown[:-1]
        g[:-1] |= grown[1:]
        g[:, 1:] |= grown[:, :-1]
        g[:, :-1] |= grown[:, 1:]
        grown = g
    return grown & ~mask


# Red lesions (MA, HE, NV) darken the green channel against their immediate
# surroundings; exudates (EX, SE) brighten it.
_DARKER = {"MA": True, "HE": True, "NV": True, "EX": False, "SE": False}


@pytest.mark.parametrize("index", range(10))
def test_lesion_pixels_differ_from_their_surroundings(index):
    s = generate_fundus(4, index, 128)
    green = s.image[:, :, 1].astype(np.float32)
    union = np.zeros(green.shape, bool)
    for m in s.masks.values():
        union |= m
    for code, mask in s.masks.items():
        ring = _ring(union, 4) & _ring(mask, 4)  # around this lesion, off every lesion
        assert ring.sum() > 10, code
        inside, around = green[mask].mean(), green[ring].mean()
        if _DARKER[code]:
            assert inside < around - 4, (code, inside, around)
        else:
            assert inside > around + 4, (code, inside, around)


def test_lesion_load_rises_with_the_grade():
    # International clinical scale: more lesions of more kinds as the grade rises.
    area = {g: [] for g in range(5)}
    for i in range(25):
        s = generate_fundus(6, i, 96)
        area[s.label].append(sum(int(m.sum()) for m in s.masks.values()))
    means = [np.mean(area[g]) for g in range(5)]
    assert means[0] == 0
    assert means[1] < means[2] < means[3], means
    ma = [generate_fundus(6, i, 96).masks.get("MA") for i in range(25)]
    assert all(m is None or m.any() for m in ma)


def test_same_picture_at_every_size():
    # Geometry is drawn in image units, so a large image downsized matches the small one.
    big = generate_fundus(8, 3, 192)
    small = generate_fundus(8, 3, 96)
    assert big.label == small.label and set(big.masks) == set(small.masks)
    down = np.asarray(Image.fromarray(big.image).resize((96, 96), Image.BILINEAR), dtype=np.float32)
    assert np.abs(down - small.image.astype(np.float32)).mean() < 12
    for code in big.masks:
        cy_b, cx_b = np.argwhere(big.masks[code]).mean(0) / 2
        cy_s, cx_s = np.argwhere(small.masks[code]).mean(0)
        assert abs(cy_b - cy_s) < 3 and abs(cx_b - cx_s) < 3, code


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
