"""The end-to-end evaluation from synthetic sources, at toy size: every configuration runs and is reported."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from medlocker.report.pipeline import REPORT_PROTECTION, RunConfig, configurations, run_from_sources


def test_pipeline_fixed_and_learned_logo(tmp_path) -> None:
    config = RunConfig(
        n_images=6, n_train=24, size=48, archs=("smallcnn", "resnet18"), surrogates=("smallcnn",), epochs=1,
        configs=configurations("ensemble", "ensemble_learned",
                               base=REPORT_PROTECTION.override(budget=8, learn_steps=3, learn_images=8)), device="cpu",
        transforms=("jpeg75",), attacks=("inverse_blend",), secondary_attacks=(),
    )
    result = run_from_sources(config, tmp_path, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["config"] for r in report["comparison"]] == ["ensemble", "ensemble_learned"]
    assert report["meta"]["config"] == "ensemble_learned"
    assert report["meta"]["search"]["logo_mode"] == "learned"
    assert report["headline"]["lesion_pixels_changed"] == 0
    assert report["models"]["smallcnn"]["role"] == "white-box" and report["models"]["resnet18"]["role"] == "black-box"
    assert "learn_logo_ensemble_learned" in result["timings"]
    for row in report["comparison"]:
        assert 0.0 <= row["white_box_acc"] <= 1.0 and row["lesion_pixels_changed"] == 0
    fixed = json.loads((tmp_path / "ensemble" / "report.json").read_text())
    assert fixed["meta"]["search"]["logo_mode"] == "fixed"
    # the two configurations protected the same images: their clean accuracies agree
    for m in ("smallcnn", "resnet18"):
        assert np.isclose(fixed["models"][m]["clean_acc"], report["models"][m]["clean_acc"])
    assert (tmp_path / "report.html").stat().st_size > 0
    with Image.open(tmp_path / "ensemble_learned" / "logo.png") as learned, \
            Image.open(tmp_path / "ensemble" / "logo.png") as fixed:
        assert learned.mode == "RGBA" and fixed.mode == "RGBA"


def test_presets_and_colour_options_from_the_command_line() -> None:
    import sys
    from pathlib import Path

    import pytest

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from evaluate import build_parser, config_from_args

    from medlocker.report.pipeline import CPU, GPU

    parse = build_parser().parse_args
    gpu = config_from_args(parse(["--gpu", "--out", "x"]))
    assert gpu == GPU and gpu.model_size == 224 and gpu.archs == CPU.archs
    same = config_from_args(parse("--cpu --epochs 10 --model-size 224 --device auto --colour-eot jpeg75,resize0.5,median3 "
                                  "--colour-cell 4 --logo-shrink 0.7 --out x".split()))
    assert same == GPU  # the preset is exactly the documented command
    protection = gpu.configuration("ensemble_learned_colours").protection
    assert protection.texture.views(protection.placement) == ("jpeg75", "resize0.5", "median3")
    assert protection.placement.eot == ()
    # the colour steps' queries (4 views, 2 surrogates) and the plain-logo check come on top of the search budget
    assert protection.queries(2) == protection.placement.budget + (protection.texture.steps * 4 + 1) * 2
    none = config_from_args(parse(["--cpu", "--colour-eot", "none", "--out", "x"]))
    assert none.configuration("ensemble_learned_colours").protection.texture.eot == ()
    with pytest.raises(ValueError, match="presets"):
        config_from_args(parse(["--cpu", "--gpu", "--out", "x"]))
    with pytest.raises(SystemExit):
        parse(["--colour-eot", "jpeg", "--out", "x"])
