"""LicensedDataset: the licensee's PyTorch view of a protected dataset.

It is a webdataset :class:`~webdataset.DataPipeline` with the fluid interface, so
``.shuffle(n).map(f).batched(n).to_tuple(...)`` compose as usual, and it works
under ``torch.utils.data.DataLoader(num_workers>0)`` (fork or spawn),
``webdataset.WebLoader`` and DDP. Samples, not shards, are split over ranks and
workers (:func:`medlocker.shards.reader.split_samples`): every rank takes the same
number of samples per epoch whatever the shard count (the last ranks are padded
with samples from the start, as ``DistributedSampler`` pads), so DDP never waits
on a rank that ran out. ``len(ds)`` is that per-rank count (webdataset's
``with_length`` semantics: samples, not batches; inside a DataLoader worker, the
worker's share).

Everything that can be checked once is checked in the constructor: the manifest
against the pinned owner key, the licence (dataset id, manifest digest, clock,
licensee key). Per shard and per sample checks run in the pipeline stages of
:mod:`medlocker.shards.reader`: each shard is copied into a spool (memory up to
``SPOOL_BYTES``, 128 MiB, per worker; a temporary file beyond) and its size and
SHA-256 are checked before any of its samples is parsed or yielded. Any failure
raises, and a watermarked image is never yielded in place of an original.

Example::

    ds = LicensedDataset("s3://bucket/ds", license="alice.license", identity="alice.key",
                         owner="owner.pub", storage_options={...}).shuffle(256)
    loader = DataLoader(ds.map(to_tensor).to_tuple("image", "label").batched(32), num_workers=4)

DDP (``torchrun``): build the same dataset on every rank; each rank reads its own
``len(ds)`` samples, so ``for batch in loader`` takes the same number of steps on all.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import webdataset as wds

from .crypto import Identity, PublicIdentity, verify_license
from .shards import fs as _fs
from .shards.manifest import Manifest, read_manifest
from .shards.reader import ShardList, expand_shards, open_shards, restore_samples, shard_specs

__all__ = ["LicensedDataset"]

_MAX_LICENSE_BYTES = 1 << 20


def _owner(owner: PublicIdentity | str | os.PathLike[str]) -> PublicIdentity:
    if isinstance(owner, PublicIdentity):
        return owner
    if isinstance(owner, (str, os.PathLike)):
        return PublicIdentity.load(owner)
    raise TypeError(f"owner must be a PublicIdentity or a path to a .pub file, got {type(owner).__name__}")


def _identity(identity: Identity | str | os.PathLike[str], passphrase: bytes | None) -> Identity:
    if isinstance(identity, Identity):
        return identity
    if isinstance(identity, (str, os.PathLike)):
        return Identity.load(identity, passphrase=passphrase)
    raise TypeError(f"identity must be an Identity or a path to a .key file, got {type(identity).__name__}")


def _license_bytes(license: str | os.PathLike[str] | bytes) -> bytes:
    if isinstance(license, (bytes, bytearray)):
        return bytes(license)
    if isinstance(license, (str, os.PathLike)):
        return _fs.read_bytes(os.fspath(license), None, max_size=_MAX_LICENSE_BYTES)
    raise TypeError(f"license must be bytes or a path, got {type(license).__name__}")


class LicensedDataset(wds.DataPipeline, wds.FluidInterface):
    """Exact originals of a protected dataset, for the holder of a valid licence.

    Args:
        dataset: Dataset folder or fsspec URL (``s3://bucket/prefix``).
        license: Licence file path, or its bytes.
        identity: The licensee's :class:`Identity`, or a path to its ``.key`` file.
        owner: The pinned owner :class:`PublicIdentity`, or a path to its ``.pub`` file.
        storage_options: fsspec options for ``dataset`` (e.g. an S3 endpoint).
        passphrase: Passphrase of the ``.key`` file, if it has one.
        now: Clock for the licence check (timezone-aware); defaults to now.
        shardshuffle: ``False``/``0`` reads shards in manifest order; ``True`` or a
            positive int permutes the (small) shard list each epoch with ``seed``
            (an int is accepted for webdataset compatibility; the whole list is
            permuted). Shuffle samples with ``.shuffle(n)``.
        seed: Seed of the shard permutation; identical on every rank and worker.
        allow_insecure_test_seed: Read a dataset that the owner packed with a test
            seed, whose originals anyone can decrypt (tests only; refused otherwise).

    Yields:
        ``{"__key__", "__url__", "image": PIL RGB (identical to the original),
        "label": int, "class": str, "meta": dict}``.

    Raises:
        SignatureError, FormatError: Bad or missing manifest (at construction).
        InsecureDatasetError: A test-seed dataset without ``allow_insecure_test_seed``.
        LicenseError: Wrong dataset/manifest, wrong licensee, expired (at construction).
        IntegrityError: Any shard, index or sample that differs from what the owner
            signed (while iterating).
    """

    def __init__(
        self,
        dataset: str | os.PathLike[str],
        *,
        license: str | os.PathLike[str] | bytes,
        identity: Identity | str | os.PathLike[str],
        owner: PublicIdentity | str | os.PathLike[str],
        storage_options: dict[str, Any] | None = None,
        passphrase: bytes | None = None,
        now: datetime | None = None,
        shardshuffle: bool | int = False,
        seed: int = 0,
        allow_insecure_test_seed: bool = False,
    ) -> None:
        dest = os.fspath(dataset)
        owner_key = _owner(owner)
        manifest = read_manifest(
            dest, owner_key, storage_options=storage_options, allow_insecure_test_seed=allow_insecure_test_seed
        )
        lic = verify_license(
            _license_bytes(license),
            owner=owner_key,
            identity=_identity(identity, passphrase),
            dataset_id=manifest.dataset_id,
            manifest_digest=manifest.digest,
            now=now,
        )
        self.manifest: Manifest = manifest
        self.expires: datetime = lic.expires
        self._shards = ShardList(shard_specs(dest, manifest), shuffle=bool(shardshuffle), seed=seed)
        super().__init__(
            self._shards,
            open_shards(dataset_id=manifest.dataset_id, storage_options=storage_options),
            expand_shards(),
            restore_samples(content_key=lic.content_key, dataset_id=manifest.dataset_id, classes=manifest.classes),
        )

    @property
    def num_samples(self) -> int:
        """Samples per epoch over all ranks and workers (from the signed manifest)."""
        return self.manifest.num_samples

    def __len__(self) -> int:
        """Samples this rank yields per epoch (this worker's share inside a DataLoader worker)."""
        return len(self._shards)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.manifest.classes

    def set_epoch(self, epoch: int) -> None:
        """Select the shard permutation of ``epoch`` (call before each epoch with workers)."""
        self._shards.set_epoch(epoch)

    def __repr__(self) -> str:
        m = self.manifest
        return f"LicensedDataset(dataset_id={m.dataset_id!r}, shards={len(m.shards)}, samples={m.num_samples})"
