"""Watermark parameters: one placement of one logo on the stored image's pixel grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Placement", "Box"]

Box = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)`` in pixels, half-open: the box covers ``x0 <= x < x1``."""

_FIELDS = ("x", "y", "w", "h", "opacity")


@dataclass(frozen=True)
class Placement:
    """One watermark: where the resized logo goes and how opaque it is.

    All fields are integers so that a placement round-trips through canonical
    JSON and renders to the same bytes everywhere (see :func:`render_exact`).

    Attributes:
        x, y: top-left of the logo box.
        w, h: logo box size; the logo is resized to ``w x h``.
        opacity: 1..255; the per-pixel weight is ``logo_alpha * opacity / 255**2``.
    """

    x: int
    y: int
    w: int
    h: int
    opacity: int

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Placement.{name} must be an int, got {type(value).__name__}")
        if self.x < 0 or self.y < 0:
            raise ValueError(f"Placement top-left must be >= 0, got ({self.x}, {self.y})")
        if self.w < 1 or self.h < 1:
            raise ValueError(f"Placement size must be >= 1, got {self.w}x{self.h}")
        if not 1 <= self.opacity <= 255:
            raise ValueError(f"Placement.opacity must be in 1..255, got {self.opacity}")

    @property
    def box(self) -> Box:
        """``(x0, y0, x1, y1)``, half-open."""
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    def to_dict(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in _FIELDS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Placement:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ``ValueError``."""
        if set(d) != set(_FIELDS):
            raise ValueError(f"a placement has exactly the keys {_FIELDS}, got {sorted(d)}")
        return cls(**{name: d[name] for name in _FIELDS})
