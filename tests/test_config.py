"""ProtectionConfig: nested parts, computed cost, presets as data, the flat spelling kept working."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace

import pytest

import medlocker
from medlocker.pack import PackConfig
from medlocker.watermark import (
    DEFAULT_PRESET,
    PRESETS,
    PlacementConfig,
    ProtectionConfig,
    SearchConfig,
    TextureConfig,
    UniversalConfig,
    protection_preset,
)


def test_queries_are_the_placement_budget_plus_the_texture() -> None:
    off = ProtectionConfig(placement=PlacementConfig(budget=40))
    assert off.queries(2) == 40
    on = replace(off, texture=TextureConfig(steps=10))
    assert on.queries(2) == 40 + (10 + 1) * 2  # each step: 2 surrogates x identity; + one check per surrogate
    views = replace(on, texture=TextureConfig(steps=10, eot=("jpeg75", "median3")))
    assert views.queries(3) == 40 + (10 * 3 + 1) * 3
    inherited = replace(on, placement=PlacementConfig(budget=40, eot=("blur", "identity")))
    assert inherited.texture.views(inherited.placement) == ("blur", "identity")
    assert inherited.queries(1) == 40 + 10 * 2 + 1  # identity is counted once


def test_presets_are_data_and_unknown_names_list_the_valid_ones() -> None:
    assert {"paper", "standard", "strong"} <= set(PRESETS) and DEFAULT_PRESET in PRESETS
    paper = protection_preset("paper")
    assert paper.universal.mode == "fixed" and paper.texture.steps == 0  # position + transparency only
    assert all(isinstance(p, ProtectionConfig) for p in PRESETS.values())
    with pytest.raises(ValueError, match="paper, standard, strong"):
        protection_preset("nope")
    with pytest.raises(TypeError):
        PRESETS["mine"] = paper  # type: ignore[index]
    with pytest.raises(FrozenInstanceError):
        paper.seed = 3  # type: ignore[misc]
    assert medlocker.ProtectionConfig is ProtectionConfig and medlocker.protection_preset is protection_preset


def test_override_by_flat_names_and_the_former_search_config() -> None:
    base = protection_preset("paper")
    c = base.override(budget=7, colour_steps=3, logo_mode="learned", colour_eot=["blur"], seed=5, lesion_margin=None)
    assert (c.placement.budget, c.texture.steps, c.universal.mode, c.texture.eot, c.seed) == (7, 3, "learned",
                                                                                             ("blur",), 5)
    assert c.placement.lesion_margin == base.placement.lesion_margin  # None = not given
    assert base.override(min_logo_scale=0).placement.min_logo_scale is None  # 0 = never shrink
    assert base.override(logo_scale=0.005).placement.min_logo_scale == 0.005  # min follows a smaller logo
    with pytest.raises(TypeError, match="no_such"):
        base.override(no_such=1)
    old = SearchConfig(optimizer="blackbox", budget=24, logo_scale=0.02, lesion_margin=1, colour_steps=2)
    assert old == ProtectionConfig(placement=PlacementConfig(optimizer="blackbox", budget=24, logo_scale=0.02,
                                                             lesion_margin=1), texture=TextureConfig(steps=2))


def test_parts_validate_their_fields() -> None:
    with pytest.raises(ValueError, match="optimizer"):
        PlacementConfig(optimizer="pgd")
    with pytest.raises(ValueError, match="min_logo_scale"):
        PlacementConfig(logo_scale=0.02, min_logo_scale=0.03)
    with pytest.raises(ValueError, match="mode"):
        UniversalConfig(mode="random")
    with pytest.raises(TypeError, match="placement"):
        ProtectionConfig(placement=TextureConfig())  # type: ignore[arg-type]
    assert PlacementConfig(logo_scale=0.04, min_logo_scale=0.01, logo_shrink=0.5).scales == (0.04, 0.02, 0.01)


def test_pack_config_holds_a_protection_and_keeps_the_old_keyword() -> None:
    assert PackConfig().protection == PRESETS[DEFAULT_PRESET]
    paper = protection_preset("paper")
    assert PackConfig(search=paper).protection is paper  # earlier releases' spelling
    assert replace(PackConfig(protection=paper), shard_size=4).protection is paper
    with pytest.raises(TypeError):
        PackConfig(protection={"budget": 3})  # type: ignore[arg-type]


def test_the_layer_is_paid_per_texture_step_and_needs_the_texture() -> None:
    from medlocker.watermark import LayerConfig

    standard = protection_preset("standard")
    assert standard.layer.on and standard.texture.max_change is not None
    # per step: identity view + the filled-box view, each surrogate; + one check per surrogate
    assert standard.queries(2) == 40 + (38 + 1) * 2 + 38 * 2 == 194
    with pytest.raises(ValueError, match="texture"):
        ProtectionConfig(layer=LayerConfig(amplitude=3))
    with pytest.raises(ValueError, match="amplitude"):
        LayerConfig(amplitude=200)
