"""MedLocker: visible adversarial watermarks for medical image datasets.

The owner packs a dataset with ``tools/pack.py`` (or :func:`medlocker.pack.pack`);
a licensee reads the exact originals with :class:`LicensedDataset`; everyone else
sees only the watermarked images in ordinary WebDataset shards.

Heavy submodules (torch, webdataset) load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    BadInputError,
    ExpiredError,
    FormatError,
    InsecureDatasetError,
    IntegrityError,
    KeyFileError,
    LicenseError,
    MedLockerError,
    SignatureError,
    WrongDatasetError,
    WrongLicenseeError,
)

__version__ = "0.1.0"

_LAZY = {
    "LicensedDataset": "medlocker.dataset",
    "Identity": "medlocker.crypto",
    "PublicIdentity": "medlocker.crypto",
    "issue_license": "medlocker.crypto",
    "verify_license": "medlocker.crypto",
    "pack": "medlocker.pack",
    "PackConfig": "medlocker.pack",
    "SearchConfig": "medlocker.watermark",
    "ProtectionConfig": "medlocker.watermark",
    "PlacementConfig": "medlocker.watermark",
    "TextureConfig": "medlocker.watermark",
    "UniversalConfig": "medlocker.watermark",
    "PRESETS": "medlocker.watermark",
    "protection_preset": "medlocker.watermark",
    "protect": "medlocker.watermark",
    "Placement": "medlocker.watermark",
    "open_source": "medlocker.data",
    "Classifier": "medlocker.models",
    "load_checkpoint": "medlocker.models",
}

__all__ = [
    "BadInputError",
    "ExpiredError",
    "FormatError",
    "InsecureDatasetError",
    "IntegrityError",
    "KeyFileError",
    "LicenseError",
    "MedLockerError",
    "SignatureError",
    "WrongDatasetError",
    "WrongLicenseeError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medlocker' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
