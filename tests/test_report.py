"""Tests of medlocker.report: metrics, transforms, removal attacks, evaluate() and the HTML page.

Everything runs on hand-made 32 px images and a model whose predictions are set
by the pixels, so every number in the report can be computed by hand.
"""

from __future__ import annotations

import base64
import io
import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from medlocker.models.classifier import Classifier
from medlocker.report import (
    TRANSFORMS,
    EvalOptions,
    accuracy,
    apply,
    attack_success_rate,
    attacker_psnr,
    build_html,
    estimate_blend,
    evaluate,
    inverse_blend,
    lesion_pixels_changed,
    predict,
    psnr,
    remove,
    ssim,
    summarize,
    write_report,
)
from medlocker.report.removal import inpaint
from medlocker.watermark.logo import default_logo
from medlocker.watermark.params import Placement
from medlocker.watermark.render import render_exact

S = 32


class CodeReader(nn.Module):
    """Predicts ``round(mean red of a 4x4 block / 100)`` -- the image states its own prediction."""

    def __init__(self, y: int, x: int) -> None:
        super().__init__()
        self.y, self.x = y, x
        self.dummy = nn.Parameter(torch.zeros(()))  # so the model has a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, self.y : self.y + 4, self.x : self.x + 4].mean(dim=(1, 2)) * 255.0
        code = torch.clamp(torch.round(v / 100.0), 0, 2).long()
        return nn.functional.one_hot(code, 3).float() * 10.0 + self.dummy


def reader(y: int, x: int) -> Classifier:
    return Classifier(CodeReader(y, x), arch="code", classes=("a", "b", "c"), input_size=S,
                      mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def case() -> dict:
    """Six 32 px grey images; the white-box model reads the top-left block, the black-box one the bottom-right.

    Clean codes [0, 1, 2, 0, 1, 1] vs labels [0, 1, 2, 0, 1, 2]: 5 of 6 right.
    Protected: images 0-2 get an 8x8 "logo" on the top-left block that shifts the
    code by one (wrong), images 3-4 get +10 on an 8x8 box elsewhere, image 5 no logo.
    """
    labels = np.array([0, 1, 2, 0, 1, 2])
    codes = [0, 1, 2, 0, 1, 1]
    originals = np.full((6, S, S, 3), 128, np.uint8)
    for i, c in enumerate(codes):
        originals[i, 0:4, 0:4, 0] = 100 * c
        originals[i, 28:32, 28:32, 0] = 100 * c
    protected = originals.copy()
    placements: list[Placement | None] = []
    for i in range(3):
        protected[i, 0:8, 0:8, :] = 100 * ((codes[i] + 1) % 3)
        placements.append(Placement(x=0, y=0, w=8, h=8, opacity=128))
    for i in (3, 4):
        protected[i, 20:28, 20:28, :] += 10
        placements.append(Placement(x=20, y=20, w=8, h=8, opacity=64))
    placements.append(None)
    lesion_boxes = [[(10, 10, 16, 16)] for _ in range(6)]
    return dict(originals=originals, protected=protected, labels=labels, placements=placements,
                lesion_boxes=lesion_boxes, queries=[10, 20, 30, 40, 50, 0])


@pytest.fixture(scope="module")
def evaluated(case: dict) -> tuple[dict, dict]:
    models = {"white": reader(0, 0), "black": reader(28, 28)}
    return evaluate(
        **case, models=models, surrogates={"white"}, logo=default_logo(), synthetic=True, wall_time_s=3.0,
        options=EvalOptions(transforms=("jpeg75", "resize0.5", "median3"), grid_per_grade=1),
    )


# ----------------------------------------------------------------------------- metrics


def test_accuracy_and_attack_success_rate() -> None:
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    # clean-correct: 0, 1, 3; of those the protected prediction is wrong on 1 and 3
    assert attack_success_rate([0, 1, 0, 2], [0, 2, 2, 0], [0, 1, 2, 2]) == pytest.approx(2 / 3)
    assert math.isnan(attack_success_rate([1, 1], [0, 0], [0, 0]))
    with pytest.raises(ValueError):
        accuracy([0, 1], [0])


def test_psnr_of_known_perturbation() -> None:
    a = np.full((S, S, 3), 100, np.uint8)
    b = a.copy()
    b[:8, :8] += 10  # 64 px x 3 channels off by 10
    mse = 64 * 3 * 100 / (S * S * 3)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / mse))
    region = np.zeros((S, S), bool)
    region[:8, :16] = True  # half of the region is changed
    assert psnr(a, b, region) == pytest.approx(10 * math.log10(255**2 / 50.0))
    assert psnr(a, a) == math.inf
    region[:] = False
    region[20:, 20:] = True
    assert psnr(a, b, region) == math.inf


def test_ssim() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    assert ssim(img, img) == 1.0
    assert ssim(img, img, channels="per_channel") == 1.0
    noisy = np.clip(img.astype(int) + rng.integers(-40, 41, img.shape), 0, 255).astype(np.uint8)
    s = ssim(img, noisy)
    assert 0.0 < s < 0.99
    # changes confined to one corner leave the SSIM of the far region at 1
    corner = img.copy()
    corner[:6, :6] = 0
    far = np.zeros((S, S), bool)
    far[16:, 16:] = True
    assert ssim(img, corner, far) == pytest.approx(1.0)
    assert ssim(img, corner) < 1.0
    with pytest.raises(ValueError):
        ssim(img, img, channels="hsv")


def test_lesion_pixels_changed() -> None:
    a = np.zeros((S, S, 3), np.uint8)
    b = a.copy()
    b[0:4, 0:4, 1] = 9  # 16 pixels, one channel
    assert lesion_pixels_changed(a, b, [(10, 10, 20, 20)]) == 0
    assert lesion_pixels_changed(a, b, [(2, 2, 10, 10)]) == 4  # 2x2 overlap
    assert lesion_pixels_changed(a, b, [(0, 0, 3, 3), (2, 2, 10, 10)]) == 9 + 4 - 1
    mask = np.zeros((S, S), bool)
    mask[0, :] = True
    assert lesion_pixels_changed(a, b, mask) == 4


def test_summarize() -> None:
    s = summarize([1, 2, 3, 4, 100, math.inf])
    assert s["n"] == 6 and s["n_nonfinite"] == 1
    assert s["median"] == 3 and s["mean"] == 22 and s["p95"] == pytest.approx(np.percentile([1, 2, 3, 4, 100], 95))
    assert math.isnan(summarize([])["median"])


def test_predict_batches_and_restores_mode(case: dict) -> None:
    clf = reader(0, 0)
    clf.train()
    p = predict(clf, case["originals"], batch_size=4)
    assert p.tolist() == [0, 1, 2, 0, 1, 1]
    assert clf.training


# ----------------------------------------------------------------------------- robustness


def test_transforms_keep_shape_and_dtype() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (S, S + 8, 3), dtype=np.uint8)
    for name in TRANSFORMS:
        out = apply(name, img)
        assert out.shape == img.shape and out.dtype == np.uint8, name
    assert not np.array_equal(apply("jpeg75", img), img)
    assert apply("jpeg50", img).tobytes() != apply("jpeg90", img).tobytes()
    flat = np.full((S, S, 3), 77, np.uint8)
    assert np.array_equal(apply("median3", flat), flat)
    assert apply("rotate", flat)[0, 0].tolist() == [0, 0, 0]  # black fill in the corner


def test_unknown_transform_lists_names() -> None:
    with pytest.raises(ValueError, match="jpeg75"):
        apply("sharpen", np.zeros((4, 4, 3), np.uint8))


# ----------------------------------------------------------------------------- removal


def smooth_image(size: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.stack([120 + 60 * np.sin(xx / 17), 80 + 40 * np.cos(yy / 13), 60 + 0.5 * (xx + yy) / 2], axis=-1)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def test_inpaint_changes_only_the_box() -> None:
    original = smooth_image()
    logo = default_logo()
    p = Placement(x=10, y=20, w=16, h=13, opacity=200)
    wm = render_exact(original, logo, p)
    for method in ("telea", "ns"):
        for shape_logo in (None, logo):
            out = inpaint(wm, p.box, method=method, logo_rgba=shape_logo)
            outside = np.ones(original.shape[:2], bool)
            outside[20:33, 10:26] = False
            assert np.array_equal(out[outside], wm[outside])
            assert not np.array_equal(out, wm)
            assert attacker_psnr(out, original, p.box) > attacker_psnr(wm, original, p.box)


def test_inverse_blend_with_true_parameters_is_near_exact() -> None:
    original = smooth_image()
    logo = default_logo()
    p = Placement(x=30, y=8, w=24, h=20, opacity=128)
    wm = render_exact(original, logo, p)
    out = inverse_blend(wm, logo, p.box, p.opacity)
    err = np.abs(out.astype(int) - original.astype(int))
    assert err.max() <= 2
    assert attacker_psnr(out, original, p.box) > 45
    outside = np.ones(original.shape[:2], bool)
    outside[8:28, 30:54] = False
    assert np.array_equal(out[outside], wm[outside])
    # the logo's alpha reaches 255, so opacity 255 would divide by zero: it is capped
    assert np.isfinite(inverse_blend(render_exact(original, logo, Placement(x=30, y=8, w=24, h=20, opacity=255)),
                                     logo, p.box, 255).astype(float)).all()


def test_estimated_blend_and_attacks() -> None:
    original = smooth_image()
    logo = default_logo()
    p = Placement(x=40, y=10, w=20, h=17, opacity=150)  # the size rule's logo at 4 % of 96 x 96
    wm = render_exact(original, logo, p)
    est = estimate_blend(wm, logo)
    assert est.box == p.box
    assert abs(est.opacity - p.opacity) <= 8
    out = remove("inverse_blend", wm, logo, estimate=est)
    value = attacker_psnr(out, original, p.box)
    assert math.isfinite(value) and value > attacker_psnr(wm, original, p.box)
    oracle = remove("inverse_blend_oracle", wm, logo, oracle_box=p.box, oracle_opacity=p.opacity)
    assert attacker_psnr(oracle, original, p.box) > 45
    with pytest.raises(ValueError, match="inpaint_telea"):
        remove("erase", wm, logo)


# ----------------------------------------------------------------------------- evaluate


def test_report_numbers(evaluated: tuple[dict, dict]) -> None:
    report, _ = evaluated
    white, black = report["models"]["white"], report["models"]["black"]
    assert white["role"] == "white-box" and black["role"] == "black-box"
    assert white["clean_acc"] == pytest.approx(5 / 6) and black["clean_acc"] == pytest.approx(5 / 6)
    assert white["protected_acc"] == pytest.approx(2 / 6)
    assert black["protected_acc"] == pytest.approx(5 / 6)
    assert white["asr"] == pytest.approx(3 / 5) and black["asr"] == 0.0
    h = report["headline"]
    assert h["white_box_acc"] == pytest.approx(2 / 6) and h["black_box_acc"] == pytest.approx(5 / 6)
    assert h["paper"]["white_box_acc"] == 0.0857 and h["paper"]["black_box_acc"] == 0.4583

    q = report["quality"]
    assert q["lesion_pixels_changed"] == {"total": 0, "images_with_changes": 0, "max": 0}
    # image 3: an 8x8 box +10 on all channels -> MSE 6.25; image 5 unchanged -> inf
    assert q["psnr"]["n"] == 6 and q["psnr"]["n_nonfinite"] == 1
    assert q["psnr"]["max"] == pytest.approx(10 * math.log10(255**2 / 6.25))
    assert q["logo_area_pct"]["median"] == pytest.approx(100 * 64 / S**2)
    assert q["opacity"]["max"] == pytest.approx(128 / 255) and q["n_without_logo"] == 1

    c = report["cost"]
    assert c["queries"]["median"] == 25 and c["queries"]["mean"] == 25
    assert c["queries"]["p95"] == pytest.approx(np.percentile([10, 20, 30, 40, 50, 0], 95))
    assert c["wall_time_per_image_s"] == pytest.approx(0.5)

    rob = report["robustness"]
    assert rob["transforms"] == ["jpeg75", "resize0.5", "median3"]
    assert set(rob["protected"]["white"]) == set(rob["clean"]["white"]) == set(rob["transforms"])
    # median3 leaves the flat 4x4 code block of the black-box reader intact
    assert rob["clean"]["black"]["median3"] == pytest.approx(5 / 6)
    rem = report["removal"]
    assert rem["accuracy"]["white"]["licensed"] == pytest.approx(5 / 6)
    assert rem["accuracy"]["white"]["none"] == pytest.approx(2 / 6)
    assert rem["licensed"]["exact_fraction"] == 1.0 and rem["licensed"]["assumed_exact"]
    assert set(rem["attacker_psnr"]) == set(rem["attacks"])


def test_report_files_are_self_contained(evaluated: tuple[dict, dict], tmp_path) -> None:
    report, figures = evaluated
    assert {"grid", "transfer", "robustness", "removal", "distributions"} <= set(figures)
    path = write_report(tmp_path, report, figures)
    text = path.read_text(encoding="utf-8")
    assert "synthetic data" in text and "8.57 %" in text and "45.83 %" in text
    assert "http://" not in text and "https://" not in text

    class Collect(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.srcs: list[str] = []
            self.refs: list[str] = []

        def handle_starttag(self, tag: str, attrs: list) -> None:
            d = dict(attrs)
            if tag == "img":
                self.srcs.append(d.get("src", ""))
            for key in ("href", "src"):
                if key in d and tag != "img":
                    self.refs.append(d[key])
            assert tag not in ("script", "link", "iframe"), tag

    parser = Collect()
    parser.feed(text)
    assert len(parser.srcs) >= len(figures)
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))) as im:
            assert im.format == "PNG"
            im.load()
    assert all(r.startswith("#") for r in parser.refs)

    data = json.loads((tmp_path / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
    assert data["models"]["white"]["protected_acc"] == pytest.approx(2 / 6)
    for name in figures:
        assert (tmp_path / f"{name}.png").read_bytes() == figures[name]


def test_real_data_is_not_labelled_synthetic(evaluated: tuple[dict, dict]) -> None:
    report, figures = evaluated
    text = build_html({**report, "synthetic": False}, {})
    assert "synthetic data" not in text and "real data" in text


def test_evaluate_rejects_bad_input(case: dict) -> None:
    bad = dict(case, queries=[1, 2])
    with pytest.raises(ValueError, match="queries"):
        evaluate(**bad, models={"m": reader(0, 0)}, surrogates={"m"}, logo=default_logo(), synthetic=True)
    with pytest.raises(ValueError, match="unknown transforms"):
        evaluate(**case, models={"m": reader(0, 0)}, surrogates={"m"}, logo=default_logo(), synthetic=True,
                 options=EvalOptions(transforms=("sharpen",)))


def test_to_jsonable_has_no_nan() -> None:
    from medlocker.report import to_jsonable

    out = to_jsonable({"a": math.nan, "b": math.inf, "c": np.float32(0.5), "d": (1, np.int64(2)), "e": np.arange(2)})
    assert out == {"a": None, "b": "inf", "c": 0.5, "d": [1, 2], "e": [0, 1]}
    json.dumps(out, allow_nan=False)


def test_suite_section(evaluated: tuple[dict, dict]) -> None:
    report, _ = evaluated
    s = report["suite"]
    # 32 px images: no logo size of the matcher's pyramid fits, so the blind removals leave the image as it is
    assert s["skipped"] == {"learned_remover": "no learned remover was given (Attacker.remover is None)"}
    assert "learned_remover" not in s["attacks"] and s["attacks"][0] == "published"
    assert s["held_out_models"] == ["black"]
    assert s["accuracy"]["black"]["published"] == pytest.approx(report["models"]["black"]["protected_acc"])
    assert s["held_out"]["inpaint_telea"] == pytest.approx(s["held_out"]["published"])
    counted = {a: v for a, v in s["held_out"].items() if a != "oracle_inpaint"}
    assert s["worst_case"]["acc"] == pytest.approx(max(counted.values()))
    assert s["oracle"]["attack"] == "oracle_inpaint"
    # the oracle inpaints the white-box reader's code block on images 0-2 with the grey around it (code 1)
    assert s["accuracy"]["white"]["oracle_inpaint"] == pytest.approx(3 / 6)
    assert set(s["clean_after_attack"]["white"]) == {"graham", "clahe", "jpeg50", "jpeg30", "blur", "bits4"}
    h = report["headline"]
    assert h["worst_case_acc"] == s["worst_case"]["acc"] and h["oracle_acc"] == s["oracle"]["acc"]


def test_html_escapes_report_values(evaluated: tuple[dict, dict]) -> None:
    report, _ = evaluated
    evil = "<script>alert(1)</script>"
    models = {evil: report["models"]["white"], **report["models"]}
    text = build_html({**report, "models": models, "title": evil, "meta": {"note": evil}}, {})
    assert evil not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
