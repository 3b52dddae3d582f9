"""Optimizers: they lower the margin, count queries exactly, respect the budget, are reproducible
and stop at the first success."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

from medlocker.models.classifier import Classifier
from medlocker.watermark import PlacementConfig, ProtectionConfig, protect
from medlocker.watermark.objective import Objective, margins
from medlocker.watermark.optim import OPTIMIZERS, SearchProblem, make_optimizer
from medlocker.watermark.optim.gradient import nms_topk, placement_scores
from medlocker.watermark.render import logo_tensor, render_candidates

OPTIMIZER_NAMES = sorted(OPTIMIZERS)
SIZE = 48


# ------------------------------------------------------------------ toy world
def toy_logo() -> np.ndarray:
    """A bright, mostly opaque 12x12 logo with a soft border."""
    logo = np.full((12, 12, 4), 235, dtype=np.uint8)
    logo[..., 3] = 255
    logo[[0, -1], :, 3] = logo[:, [0, -1], 3] = 128
    logo[4:8, 4:8, :3] = (20, 120, 140)
    return logo


def toy_images(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Noisy grey images with a bright blob in the left (class 0) or right (class 1) half."""
    rng = np.random.default_rng(seed)
    images = rng.integers(70, 130, (n, SIZE, SIZE, 3), dtype=np.uint8)
    labels = [int(i % 2) for i in range(n)]
    for i, y in enumerate(labels):
        cx = int(rng.integers(4, SIZE // 2 - 12)) + (SIZE // 2 if y else 0)
        cy = int(rng.integers(4, SIZE - 12))
        images[i, cy:cy + 8, cx:cx + 8] = 230
    return images, labels


@functools.lru_cache(maxsize=None)
def toy_model(seed: int = 0, steps: int = 60) -> Classifier:
    """A tiny CNN trained (briefly, so it is not over-confident) on the toy task."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                            nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 2))
        clf = Classifier(net, arch="toy", classes=["left", "right"], input_size=32)
        images, labels = toy_images(256, seed=1000 + seed)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        y = torch.tensor(labels)
        opt = torch.optim.Adam(clf.parameters(), lr=3e-3)
        for step in range(steps):
            b = slice((step * 32) % 256, (step * 32) % 256 + 32)
            loss = nn.functional.cross_entropy(clf(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    opt.zero_grad(set_to_none=True)
    clf.eval()
    return clf


def clean_margins(models: list[nn.Module], images: np.ndarray, labels: list[int]) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    y = torch.tensor(labels)
    with torch.no_grad():
        return torch.stack([margins(m(x), y) for m in models]).amax(0)


class Counting(nn.Module):
    """Counts images sent through the wrapped model (one query per row)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.model(x)


class AlwaysFooled(nn.Module):
    """Says class 0 for the flat grey image, class 1 as soon as any pixel differs from it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        nn.init.ones_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dev = (self.conv(x) - self.conv(torch.full_like(x, 0.0))).abs().flatten(1).amax(1)  # normalised grey -> 0
        return torch.stack([torch.full_like(dev, 0.1), 1000.0 * dev], dim=1)


class NeverFooled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(x).mean((1, 2, 3)) * 0
        return torch.stack([z + 5.0, z], dim=1)


def flat_grey_classifier(backbone: nn.Module, input_size: int = SIZE) -> Classifier:
    # normalisation around grey: a flat grey image maps to exactly 0
    return Classifier(backbone, arch="probe", classes=["clean", "marked"], input_size=input_size,
                      mean=(0.5, 0.5, 0.5), std=(1, 1, 1))


# ------------------------------------------------------------------ tests
def test_placement_scores_equal_brute_force_linearisation() -> None:
    g = torch.Generator().manual_seed(0)
    grad, clean = torch.randn(2, 3, 14, 17, generator=g), torch.rand(2, 3, 14, 17, generator=g)
    logo = torch.rand(4, 4, 6, generator=g)
    score = placement_scores(grad, clean, logo, 200.0)
    assert score.shape == (2, 11, 12)
    index = torch.zeros(1, dtype=torch.long)
    for b in range(2):
        for y in (0, 5, 10):
            for x in (0, 7, 11):
                delta = render_candidates(clean[b:b + 1], logo, index, torch.tensor([[x, y]]), torch.tensor([200.0]))[0] - clean[b]
                assert torch.isclose(score[b, y, x], (grad[b] * delta).sum(), atol=1e-4, rtol=1e-4)


def test_nms_topk_picks_lowest_and_suppresses_neighbours() -> None:
    s = torch.full((1, 10, 10), 5.0)
    s[0, 2, 3], s[0, 2, 4], s[0, 8, 8] = -3.0, -2.0, -1.0
    s[0, 0, 0] = float("inf")
    top = nms_topk(s, 3, (1, 1))
    assert top[0, 0].tolist() == [3, 2] and top[0, 1].tolist() == [8, 8]  # (4, 2) is suppressed
    assert nms_topk(torch.full((1, 2, 2), float("inf")), 2, (0, 0)).eq(-1).all()


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_optimizer_lowers_the_true_class_margin(name: str) -> None:
    model = toy_model()
    images, labels = toy_images(8, seed=1)
    before = clean_margins([model], images, labels)
    res = protect(images, labels, [[] for _ in labels], [model], logo=toy_logo(), device="cpu",
                  config=ProtectionConfig(placement=PlacementConfig(optimizer=name, budget=60, logo_scale=0.0625, opacity=(64, 170))))
    after = torch.tensor([r.margin for r in res])
    assert int((after < before).sum()) >= 6, (before, after)
    assert any(r.success for r in res)
    assert all(r.placement is not None and r.queries <= 60 for r in res)


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_queries_are_counted_exactly_and_within_budget(name: str) -> None:
    wrapped = [Counting(toy_model(0)), Counting(toy_model(1))]
    images, labels = toy_images(6, seed=2)
    budget = 47  # not a multiple of the cost of one evaluation (2 models x 2 views)
    config = ProtectionConfig(placement=PlacementConfig(optimizer=name, budget=budget, logo_scale=0.0625, eot=("blur",), margin=5.0))
    res = protect(images, labels, [[] for _ in labels], wrapped, logo=toy_logo(), config=config, device="cpu")
    assert sum(r.queries for r in res) == sum(m.rows for m in wrapped)
    assert all(r.queries <= budget for r in res)
    assert all(r.queries > budget - 2 * 2 - 2 for r in res if not r.success)  # an unfooled image spends its budget


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_same_seed_same_placements(name: str) -> None:
    model = toy_model()
    images, labels = toy_images(5, seed=3)
    run = lambda seed: protect(images, labels, [[] for _ in labels], [model], logo=toy_logo(), device="cpu",
                               config=ProtectionConfig(placement=PlacementConfig(optimizer=name, budget=40, logo_scale=0.0625),
                                                       seed=seed))
    a, b, c = run(0), run(0), run(1)
    assert [r.placement for r in a] == [r.placement for r in b]
    assert [r.queries for r in a] == [r.queries for r in b]
    if name != "gradient":  # the random optimizers draw other candidates for another seed
        assert [r.placement for r in a] != [r.placement for r in c]


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_stops_at_first_success(name: str) -> None:
    images = np.full((3, SIZE, SIZE, 3), 128, dtype=np.uint8)
    model = flat_grey_classifier(AlwaysFooled())
    model.mean.fill_(128 / 255)  # the clean grey image normalises to exactly 0: class "clean"
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    assert model(x).argmax(1).eq(0).all()
    res = protect(images, [0, 0, 0], [[], [], []], [model], logo=toy_logo(), device="cpu",
                  config=ProtectionConfig(placement=PlacementConfig(optimizer=name, budget=1000, logo_scale=0.0625)))
    opt = make_optimizer(name, Objective([model]))
    first_round = opt.round_size + (1 if name == "gradient" else 0)  # + the gradient evaluation
    assert all(r.success and r.status == "fooled" for r in res)
    assert all(r.queries <= first_round + 1 for r in res), [r.queries for r in res]


def test_bhe_worst_case_is_about_4000_queries() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    model = flat_grey_classifier(NeverFooled(), input_size=8)
    res = protect(images, [0, 0], [[], []], [model], logo=toy_logo(), device="cpu",
                  config=ProtectionConfig(placement=PlacementConfig(optimizer="bhe", budget=10_000, logo_scale=0.0625)))
    assert [r.queries for r in res] == [50 + 3 * 50 * 26 + 1] * 2
    assert not any(r.success for r in res)


def test_optimizers_run_directly_and_restore_model_state() -> None:
    model = toy_model()
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    images, labels = toy_images(4, seed=4)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    logo = logo_tensor(toy_logo())
    feasible = torch.ones(4, SIZE - 11, SIZE - 11, dtype=torch.bool)
    feasible[:, :10] = False
    seen_modes = []

    class Probe(nn.Module):  # records the mode the model is used in
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen_modes.append(model.training)
            return model(x)

    for name in OPTIMIZER_NAMES:
        problem = SearchProblem(images=x, labels=torch.tensor(labels), feasible=feasible, logo=logo,
                                generators=[torch.Generator().manual_seed(i) for i in range(4)], budget=30,
                                opacity=(100, 200))
        probe = Probe()
        probe.add_module("model", model)  # so that the optimizer sees (and freezes) the model's modules
        out = make_optimizer(name, Objective([probe])).run(problem)
        assert seen_modes and not any(seen_modes)
        assert out.xy.shape == (4, 2) and out.queries.le(30).all()
        assert feasible[torch.arange(4), out.xy[:, 1], out.xy[:, 0]].all()
        assert out.opacity.ge(100).all() and out.opacity.le(200).all()
        assert model.training and [p.requires_grad for p in model.parameters()] == flags
    model.eval()


def test_unknown_optimizer_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="bhe, blackbox, gradient"):
        PlacementConfig(optimizer="pgd")


def test_gradient_search_gives_up_after_patience_queries_without_improvement() -> None:
    model = flat_grey_classifier(NeverFooled())  # its loss never changes: nothing can improve
    images, labels = toy_images(3, seed=6)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    feasible = torch.ones(3, SIZE - 11, SIZE - 11, dtype=torch.bool)

    def spent(patience: int | None) -> torch.Tensor:
        problem = SearchProblem(images=x, labels=torch.zeros(3, dtype=torch.long), feasible=feasible,
                                logo=logo_tensor(toy_logo()), generators=[torch.Generator().manual_seed(i) for i in range(3)],
                                budget=400, opacity=(100, 200))
        return make_optimizer("gradient", Objective([model]), patience=patience).run(problem).queries

    per_round = 1 + make_optimizer("gradient", Objective([model])).k  # one gradient + k candidates
    stopped = spent(20)
    assert stopped.le(per_round + 20 + per_round).all()  # the first round sets the best; then <= 20 more, rounded up
    assert spent(None).gt(stopped).all()
    with pytest.raises(ValueError):
        make_optimizer("gradient", Objective([model]), patience=0)


def test_the_registry_is_read_only_and_extended_only_by_register_optimizer() -> None:
    from medlocker.watermark.config import PlacementConfig
    from medlocker.watermark.optim import LinearisedPlacementSearch, register_optimizer

    with pytest.raises(TypeError):
        OPTIMIZERS["mine"] = LinearisedPlacementSearch  # type: ignore[index]
    with pytest.raises(ValueError, match="already registered"):
        register_optimizer("gradient", type("Other", (LinearisedPlacementSearch,), {}))
    with pytest.raises(TypeError, match="Optimizer subclass"):
        register_optimizer("not_an_optimizer", dict)  # type: ignore[arg-type]
    variant = type("GradientK2", (LinearisedPlacementSearch,), {"name": "test_gradient_k2"})
    register_optimizer("test_gradient_k2", variant)
    register_optimizer("test_gradient_k2", variant)  # the same class again is a no-op
    assert OPTIMIZERS["test_gradient_k2"] is variant
    assert PlacementConfig(optimizer="test_gradient_k2").optimizer == "test_gradient_k2"
