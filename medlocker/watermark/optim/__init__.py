"""Watermark placement optimizers: one interface, a registry by name.

* ``bhe`` -- Basin Hopping Evolution, the Adv-watermark baseline (black-box);
* ``blackbox`` -- stratified scan + local search (black-box, scores only);
* ``gradient`` -- linearised placement search (white-box, few queries).

The attacks that shape the mark's colours rather than its placement live beside
them, one per file: :mod:`.texture` (per-image colours at a placement) and
:mod:`.universal` (one learned logo per dataset).
"""

from __future__ import annotations

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
]

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "bhe": BasinHoppingEvolution,
    "blackbox": ScanLocalSearch,
    "gradient": LinearisedPlacementSearch,
}


def make_optimizer(name: str, objective: Objective, **kwargs: object) -> Optimizer:
    """The optimizer registered as ``name``. Raises ``ValueError`` listing the valid names."""
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(sorted(OPTIMIZERS))}") from None
    return cls(objective, **kwargs)  # type: ignore[arg-type]
