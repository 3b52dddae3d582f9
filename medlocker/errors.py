"""The one exception hierarchy of MedLocker.

Every failure a reader can meet on untrusted input raises a subclass of
:class:`MedLockerError`; caller mistakes (wrong argument types, impossible
options) stay :class:`ValueError` / :class:`TypeError`. Messages name the file
or sample they are about and say what to do.
"""

from __future__ import annotations

__all__ = [
    "MedLockerError",
    "SignatureError",
    "IntegrityError",
    "FormatError",
    "InsecureDatasetError",
    "LicenseError",
    "WrongDatasetError",
    "WrongLicenseeError",
    "ExpiredError",
    "KeyFileError",
    "BadInputError",
]


class MedLockerError(Exception):
    """Base class of every MedLocker failure on data, keys or licences."""


class SignatureError(MedLockerError):
    """A signature does not verify against the pinned public key."""


class IntegrityError(MedLockerError):
    """Bytes do not match the digest the owner signed, or an AEAD seal failed."""


class FormatError(MedLockerError):
    """A file is malformed, or has a format name or version this reader does not know."""


class InsecureDatasetError(MedLockerError):
    """The signed manifest marks the dataset as packed with an insecure test seed.

    Its keys derive from a small number, so anyone can decrypt its originals;
    readers refuse it unless the caller passes ``allow_insecure_test_seed=True``.
    """


class LicenseError(MedLockerError):
    """A licence cannot be used: base class of the licence failures."""


class WrongDatasetError(LicenseError):
    """The licence was issued for another dataset (or another manifest)."""


class WrongLicenseeError(LicenseError):
    """The licence was issued to another licensee key."""


class ExpiredError(LicenseError):
    """The licence is expired, or not yet valid, at the reader's clock."""


class KeyFileError(MedLockerError):
    """A key file is corrupt, of the wrong type, or the passphrase is wrong."""


class BadInputError(MedLockerError):
    """A source image or label cannot be read; the message names the file."""
