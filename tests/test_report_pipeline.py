"""The end-to-end evaluation from synthetic sources, at toy size: every configuration runs and is reported."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from medlocker.report.attacks.learned import RemoverConfig
from medlocker.report.pipeline import run_from_sources
from medlocker.report.presets import REPORT_PROTECTION, RunConfig, configurations

SUITE = ("published", "graham", "inpaint_telea", "learned_remover", "jpeg30", "oracle_inpaint")


def test_pipeline_fixed_and_learned_logo(tmp_path) -> None:
    config = RunConfig(
        n_images=6, n_train=24, size=48, archs=("smallcnn", "resnet18"), surrogates=("smallcnn",), epochs=1,
        configs=configurations("ensemble", "ensemble_learned",
                               base=REPORT_PROTECTION.override(budget=8, learn_steps=3, learn_images=8)), device="cpu",
        transforms=("jpeg75",), attacks=("inverse_blend",), secondary_attacks=(), suite=SUITE,
        remover=RemoverConfig(steps=2, batch_size=2, crop=32, width=8), remover_images=8,
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
    # the attacker suite: every configuration against every attack, the attacker's own graham-trained resnet18
    assert set(report["suite_table"]) == {"ensemble", "ensemble_learned"}
    assert all(list(row) == list(SUITE) for row in report["suite_table"].values())
    suite = report["suite"]
    assert suite["attacker_trained_models"] == {"graham": ["resnet18"]} and suite["held_out_models"] == ["resnet18"]
    assert suite["worst_case"]["attack"] != "oracle_inpaint"
    assert suite["worst_case"]["acc"] == max(v for a, v in suite["held_out"].items() if a != "oracle_inpaint")
    assert suite["remover"]["held_out_pasted"]["n"] > 0
    for row in report["comparison"]:
        assert 0.0 <= row["worst_case_acc"] <= 1.0 and row["worst_case_acc"] >= row["black_box_acc"]
    assert (tmp_path / "models" / "resnet18-graham-48px-in48-1ep-n24-seed0.pt").exists()
    assert "Attacker suite" in (tmp_path / "report.html").read_text()
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

    from medlocker.report.presets import CPU, GPU

    parse = build_parser().parse_args
    gpu = config_from_args(parse(["--gpu", "--out", "x"]))
    assert gpu == GPU and gpu.model_size == 224 and gpu.archs == CPU.archs
    same = config_from_args(parse(["--cpu", "--epochs", "10", "--model-size", "224", "--device", "auto",
                                   "--colour-eot", "jpeg75,resize0.5,median3", "--colour-cell", "4",
                                   "--logo-shrink", "0.7", "--out", "x"]))
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


def test_a_preset_with_a_layer_first_still_gets_its_transfer_map(tmp_path) -> None:
    """The transfer map re-protects with the first configuration's placement alone; with the
    default preset first (its layer needs the texture) that used to raise after every other stage."""
    from medlocker.report.presets import Configuration
    from medlocker.watermark import PRESETS

    standard = PRESETS["standard"].override(budget=4, colour_steps=2, learn_steps=2, learn_images=8)
    config = RunConfig(
        n_images=4, n_train=20, size=48, archs=("smallcnn",), surrogates=("smallcnn",), epochs=1,
        configs=(Configuration("standard", standard),), transfer_sources=("smallcnn",), device="cpu",
        transforms=("jpeg75",), attacks=(), secondary_attacks=(), suite=("published",),
    )
    result = run_from_sources(config, tmp_path, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert "smallcnn alone" in report["transfer"]
    assert 0.0 <= report["transfer"]["smallcnn alone"]["smallcnn"] <= 1.0
    assert result["primary"]["meta"]["config"] == "standard"
    # The report evaluates the pixels the packer publishes: the layer outside the logo included
    # (it used to render the logo alone, so every suite figure left the layer out).
    outside = report["quality"]["psnr_outside_logo"]
    assert outside["n"] == 4 and outside["n_nonfinite"] < 4 and outside["min"] >= 40.0
