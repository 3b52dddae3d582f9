"""Synthetic diabetic-retinopathy fundus photographs with per-lesion ground truth.

No real fundus dataset can be downloaded here, so tests, the demo and the
benchmarks run on these images. Every number measured on them must be labelled
"synthetic".

Each image imitates a colour fundus photograph (``benchmarks/realism.py``
compares them with ``skimage.data.retina()`` and ``skimage.data.microaneurysms()``):

- ``anatomy.py``: the field of view, choroidal texture, nerve-fibre striation,
  the optic disc and its cup, the macula and its fovea;
- ``vessels.py``: arcades around the macula and nasal trunks, tapering,
  bifurcating and tortuous; dark wide venules, lighter thinner arterioles;
- ``lesions.py``: microaneurysms, dot/blot and flame haemorrhages, hard exudates,
  cotton-wool spots, neovascularisation, each with its exact mask;
- ``camera.py``: illumination, vignetting, the dark rim and notch of the field of
  view, colour cast, gamma, defocus, noise and JPEG;
- ``grades.py``: lesion types and counts per grade (international clinical DR scale).

Colour, illumination, vessel calibre and the camera are drawn independently of
the grade, so the grade is in the lesions (``benchmarks/shortcut.py`` checks it:
a model trained on images whose lesions were filled in stays near chance).

Image ``i`` depends only on ``(seed, i)``, so any subset can be generated in any
order or in parallel, at any size; the picture is the same at every size (only
the sensor noise is drawn per pixel). Labels are balanced: each block of five
consecutive indices holds the five grades in an order drawn from ``(seed, i // 5)``.
"""

from medlocker.data.synth.grades import GRADE_LESIONS, LESION_TYPES, NUM_GRADES
from medlocker.data.synth.render import (
    MIN_SIZE,
    SynthSample,
    generate_fundus,
    synthetic_id,
    synthetic_label,
)
from medlocker.data.synth.writer import write_synthetic_dataset

__all__ = [
    "GRADE_LESIONS",
    "LESION_TYPES",
    "MIN_SIZE",
    "NUM_GRADES",
    "SynthSample",
    "generate_fundus",
    "synthetic_id",
    "synthetic_label",
    "write_synthetic_dataset",
]
