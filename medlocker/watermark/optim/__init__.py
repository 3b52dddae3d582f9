"""Watermark placement optimizers: one interface, a registry by name.

* ``bhe`` -- Basin Hopping Evolution, the Adv-watermark baseline (black-box);
* ``blackbox`` -- stratified scan + local search (black-box, scores only);
* ``gradient`` -- linearised placement search (white-box, few queries).

The attacks that shape the mark's colours rather than its placement live beside
them, one per file: :mod:`.texture` (per-image colours at a placement) and
:mod:`.universal` (one learned logo per dataset).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from medlocker.watermark.objective import Objective
from medlocker.watermark.optim.base import (
    Optimizer,
    SearchOutcome,
    SearchProblem,
    frozen,
)
from medlocker.watermark.optim.bhe import BasinHoppingEvolution
from medlocker.watermark.optim.blackbox import ScanLocalSearch
from medlocker.watermark.optim.gradient import LinearisedPlacementSearch

__all__ = [
    "Optimizer",
    "SearchProblem",
    "SearchOutcome",
    "frozen",
    "BasinHoppingEvolution",
    "ScanLocalSearch",
    "LinearisedPlacementSearch",
    "OPTIMIZERS",
    "make_optimizer",
    "register_optimizer",
]

_REGISTRY: dict[str, type[Optimizer]] = {
    "bhe": BasinHoppingEvolution,
    "blackbox": ScanLocalSearch,
    "gradient": LinearisedPlacementSearch,
}
OPTIMIZERS: Mapping[str, type[Optimizer]] = MappingProxyType(_REGISTRY)
"""Name -> optimizer class (read-only; :func:`register_optimizer` adds one)."""


def register_optimizer(name: str, cls: type[Optimizer]) -> None:
    """Make ``cls`` available as ``PlacementConfig(optimizer=name)``.

    For experiments with variants of the built-in searches (``benchmarks/attack.py
    --gradient-k``) or an owner's own search. The built-in names cannot be replaced, and a
    name can be registered once; the class must subclass :class:`Optimizer`.
    """
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise TypeError(f"optimizer {name!r} must be an Optimizer subclass, got {cls!r}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"an optimizer named {name!r} is already registered ({_REGISTRY[name].__name__})")
    _REGISTRY[name] = cls


def make_optimizer(name: str, objective: Objective, **kwargs: object) -> Optimizer:
    """The optimizer registered as ``name``. Raises ``ValueError`` listing the valid names."""
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(sorted(OPTIMIZERS))}") from None
    return cls(objective, **kwargs)  # type: ignore[arg-type]
