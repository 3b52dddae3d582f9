"""benchmarks/resistant.py: variant parsing, the budget a variant pays, and the largest-logo map."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from medlocker.watermark import SearchConfig, default_logo
from medlocker.watermark.logo import logo_size

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "resistant.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_resistant", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_parse_variant_types(bench: ModuleType) -> None:
    base = SearchConfig(colour_steps=100, colour_eot=None)
    got = bench.parse_variant("colour_steps=300, lesion_margin=0,logo_shrink=0.9,colour_eot=jpeg75+median3", base)
    assert got == {"colour_steps": 300, "lesion_margin": 0, "logo_shrink": 0.9, "colour_eot": ("jpeg75", "median3")}
    assert type(got["colour_steps"]) is int and type(got["logo_shrink"]) is float
    assert bench.parse_variant("colour_eot=", base) == {"colour_eot": ()}
    with pytest.raises(ValueError, match="no_such_field"):
        bench.parse_variant("no_such_field=1", base)
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        bench.parse_variant("colour_steps", base)


def test_variant_budget_pays_for_its_colour_steps(bench: ModuleType) -> None:
    base = SearchConfig(budget=40, colour_steps=100, colour_eot=())
    c = base.override(**bench.parse_variant("colour_steps=300", base))
    assert c.texture.steps == 300 and c.queries(2) == 40 + (300 + 1) * 2
    # views multiply what a step costs: identity + 2 views
    c = base.override(**bench.parse_variant("colour_eot=jpeg75+median3", base))
    assert c.queries(2) == 40 + (100 * 3 + 1) * 2
    # an explicit budget is the placement search's; the texture stays on top
    assert base.override(budget=999).queries(2) == 999 + (100 + 1) * 2


def test_largest_area_follows_the_corridor(bench: ModuleType) -> None:
    logo = default_logo()
    image = torch.full((3, 224, 224), 0.8)  # no dark border: the whole image is in view
    assert bench.largest_area(logo, image, [], margin=4, shrink=0.7, scale=0.0625, min_scale=0.01) == \
        pytest.approx(np.prod(logo_size(logo, (224, 224), scale=0.0625)) / 224 ** 2)
    # one box covers everything right of x = 40: the logo must fit a 40 px (margin 0) or 36 px (margin 4) strip
    boxes = [(40, 0, 224, 224)]

    def by_hand(strip: int, shrink: float) -> float:
        s = 0.0625
        while s >= 0.01 * (1 - 1e-9):
            w, h = logo_size(logo, (224, 224), scale=s)
            if w <= strip:
                return w * h / 224 ** 2
            s *= shrink
        return 0.0

    for margin, strip in ((0, 40), (4, 36)):
        for shrink in (0.5, 0.7, 0.9):
            got = bench.largest_area(logo, image, boxes, margin=margin, shrink=shrink, scale=0.0625, min_scale=0.01)
            assert got == pytest.approx(by_hand(strip, shrink)) and got > 0
    # a finer ladder never loses area; nothing fits when the strip is thinner than the smallest logo
    assert bench.largest_area(logo, image, boxes, margin=0, shrink=0.9, scale=0.0625, min_scale=0.01) >= \
        bench.largest_area(logo, image, boxes, margin=0, shrink=0.5, scale=0.0625, min_scale=0.01)
    assert bench.largest_area(logo, image, [(3, 0, 224, 224)], margin=0, shrink=0.7, scale=0.0625,
                              min_scale=0.01) == 0.0
