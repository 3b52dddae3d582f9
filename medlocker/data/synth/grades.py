"""The grading scale: which lesion types each grade shows, and how many of them.

The counts follow the international clinical diabetic retinopathy scale
(Wilkinson et al., Ophthalmology 2003), scaled to what a small image can show:

====  ===================================================================
0     no lesions
1     mild NPDR: microaneurysms (MA) only, a few
2     moderate NPDR: more MA, a few haemorrhages (HE) in one to three
      quadrants, hard exudates (EX)
3     severe NPDR: many MA, many HE in all four quadrants, EX,
      cotton-wool spots (SE, "soft exudates")
4     PDR: the grade-3 signs plus neovascularisation (NV)
====  ===================================================================
"""

from __future__ import annotations

__all__ = ["GRADE_LESIONS", "LESION_COUNTS", "LESION_TYPES", "NUM_GRADES"]

LESION_TYPES: tuple[str, ...] = ("MA", "HE", "EX", "SE", "NV")
"""IDRiD-style lesion codes: microaneurysms, haemorrhages, hard exudates,
soft exudates (cotton-wool spots), neovascularisation."""

GRADE_LESIONS: dict[int, tuple[str, ...]] = {
    0: (),
    1: ("MA",),
    2: ("MA", "HE", "EX"),
    3: ("MA", "HE", "EX", "SE"),
    4: ("MA", "HE", "EX", "SE", "NV"),
}
"""The lesion types present in an image of each grade (always all of them)."""

NUM_GRADES = 5

LESION_COUNTS: dict[int, dict[str, tuple[int, int]]] = {
    # grade -> code -> (low, high) inclusive; HE in grade 3-4 is per quadrant, EX counts clusters.
    1: {"MA": (3, 7)},
    2: {"MA": (7, 14), "HE": (2, 5), "EX": (1, 3)},
    3: {"MA": (12, 22), "HE": (4, 7), "EX": (2, 4), "SE": (2, 5)},
    4: {"MA": (10, 20), "HE": (3, 6), "EX": (2, 4), "SE": (1, 4), "NV": (2, 3)},
}
"""Lesion counts per grade: they rise with the grade as on the clinical scale."""
