"""Source data: readers for DR dataset layouts, image decoding, synthetic fundus images."""

from medlocker.data.images import IMAGE_EXTENSIONS, load_image, load_mask
from medlocker.data.readers import Record, Source, open_source, sample_key
from medlocker.data.synth import (
    GRADE_LESIONS,
    LESION_TYPES,
    SynthSample,
    generate_fundus,
    synthetic_id,
    synthetic_label,
    write_synthetic_dataset,
)

__all__ = [
    "GRADE_LESIONS",
    "IMAGE_EXTENSIONS",
    "LESION_TYPES",
    "Record",
    "Source",
    "SynthSample",
    "generate_fundus",
    "load_image",
    "load_mask",
    "open_source",
    "sample_key",
    "synthetic_id",
    "synthetic_label",
    "write_synthetic_dataset",
]
