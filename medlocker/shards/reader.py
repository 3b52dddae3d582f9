"""Read protected shards: small, picklable webdataset stages that verify as they go.

Mirror of :mod:`medlocker.shards.writer`. The licensed pipeline is::

    ShardList                 manifest shards, optionally permuted per epoch (same order on every rank),
                              then a sample-level split over ranks x workers (:func:`split_samples`):
                              every rank gets the same number of samples, whatever the shard count
    -> open_shards            fetch the index, check its digest against the manifest, then parse;
                              copy the whole shard into a spool (memory up to SPOOL_BYTES, then a
                              temporary file) and check its size + SHA-256 before anything is parsed
    -> expand_shards          strict tar walk of the verified spool: raw bytes grouped by key, every
                              key in the index, none missing, none extra; only this worker's samples
    -> restore_samples        member digests -> open payload -> decode PNG -> restore -> pixel digest

No sample of a shard is yielded before the whole shard has matched the size and
SHA-256 the owner signed. Every check raises (``IntegrityError``/``FormatError``);
no stage ever falls back to the watermarked image. :func:`check_dataset` runs the
same checks without a licence, for ``tools/verify.py``.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import random
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import webdataset as wds
from PIL import Image

from ..crypto import PublicIdentity, canonical_json, open_payload
from ..errors import FormatError, IntegrityError, MedLockerError
from . import fs as _fs
from . import layout
from .catalog import check_catalog
from .index import MAX_INDEX_BYTES, IndexEntry, parse_index
from .manifest import Manifest, ShardInfo, read_manifest
from .payload import pixel_digest_of_raw, png_header, restore_image, sha256_digest
from .writer import public_metadata

__all__ = [
    "SPOOL_BYTES",
    "MAX_IMAGE_PIXELS",
    "ShardSpec",
    "ShardList",
    "split_samples",
    "samples_per_worker",
    "VerifiedStream",
    "open_shards",
    "expand_shards",
    "restore_samples",
    "restore_sample",
    "check_member_digests",
    "shard_specs",
    "iter_samples",
    "DatasetReport",
    "check_dataset",
]

_READ_CHUNK = 1 << 20
SPOOL_BYTES = 128 * 2**20
"""Shards up to this size are verified in memory; larger ones spill to a temporary file."""
MAX_IMAGE_PIXELS = 2**26
"""Largest image (width x height) the reader decodes: a PNG bomb is refused from its header."""
_TAR_BLOCK = 512
_ZERO_BLOCK = bytes(_TAR_BLOCK)


@dataclass(frozen=True)
class ShardSpec:
    """Where a shard and its index live, and what the manifest pins about them."""

    url: str
    index_url: str
    info: ShardInfo


def shard_specs(dest: str, manifest: Manifest) -> tuple[ShardSpec, ...]:
    """The shards of a verified manifest, in manifest (name) order."""
    return tuple(
        ShardSpec(url=_fs.join(dest, s.name), index_url=_fs.join(dest, s.index), info=s) for s in manifest.shards
    )


def split_samples(
    counts: Sequence[int], *, rank: int, world_size: int, worker: int = 0, num_workers: int = 1
) -> list[tuple[int, range]]:
    """The samples one worker of one rank reads: ``[(shard position, sample ordinals), ...]``.

    The shards' samples, in the order of ``counts``, form one sequence of ``N``.
    Each rank takes a contiguous block of ``ceil(N / world_size)`` positions,
    wrapping around to the start to pad the last ranks (as
    ``torch.utils.data.DistributedSampler`` pads), so every rank takes the same
    number of steps whatever the shard count. A rank's block is split the same
    way over its workers (sizes differ by at most one, identically on every rank).
    Ordinals count a shard's samples in key order (the order of its index and tar).
    """
    total = sum(counts)
    lo, n = _block(total, rank=rank, world_size=world_size, worker=worker, num_workers=num_workers)
    starts = [0]
    for c in counts[:-1]:
        starts.append(starts[-1] + c)
    out: list[tuple[int, range]] = []
    pos = lo
    while pos < lo + n:
        q = pos % total
        i = bisect.bisect_right(starts, q) - 1
        take = min(lo + n - pos, starts[i] + counts[i] - q)
        first = q - starts[i]
        out.append((i, range(first, first + take)))
        pos += take
    return out


def _block(total: int, *, rank: int, world_size: int, worker: int, num_workers: int) -> tuple[int, int]:
    if not (0 <= rank < world_size and 0 <= worker < num_workers):
        raise ValueError(f"rank {rank}/{world_size}, worker {worker}/{num_workers} is out of range")
    per_rank = -(-total // world_size) if total else 0
    base, extra = divmod(per_rank, num_workers)
    return rank * per_rank + worker * base + min(worker, extra), base + (worker < extra)


def samples_per_worker(total: int, *, rank: int, world_size: int, worker: int = 0, num_workers: int = 1) -> int:
    """How many samples :func:`split_samples` gives this worker (the rank's total with one worker)."""
    return _block(total, rank=rank, world_size=world_size, worker=worker, num_workers=num_workers)[1]


class ShardList(wds.PipelineStage):
    """Pipeline source: this rank's and worker's ``{"url", "spec", "select"}`` segments.

    With ``shuffle`` the shard list is permuted by ``random.Random((seed, epoch))``,
    so every rank and worker computes the same order; the sample-level split of
    :func:`split_samples` then gives each rank the same number of samples (each
    sample once per epoch, plus wrap-around padding when ranks do not divide the
    total). Rank and world size come from webdataset's ``pytorch_worker_info``
    (``RANK``/``WORLD_SIZE``, else torch.distributed), read both when the list is
    built and when it is iterated: a DataLoader worker started with ``spawn``
    (the default inside a spawned rank, and on macOS) has neither, so the rank
    seen at construction travels with the pickled list. The worker comes from
    the DataLoader. ``epoch`` advances after each pass in the iterating process; with
    non-persistent DataLoader workers call :meth:`set_epoch` from the training loop.
    """

    def __init__(self, specs: Sequence[ShardSpec], *, shuffle: bool = False, seed: int = 0) -> None:
        self.specs = tuple(specs)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self._rank_world = wds.utils.pytorch_worker_info()[:2]

    def _position(self) -> tuple[int, int, int, int]:
        """(rank, world size, worker, workers) of the calling process."""
        rank, world, worker, workers = wds.utils.pytorch_worker_info()
        if world == 1:
            rank, world = self._rank_world
        return rank, world, worker, workers

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Samples this rank yields per epoch (this worker's share inside a DataLoader worker)."""
        rank, world, worker, workers = self._position()
        total = sum(s.info.samples for s in self.specs)
        return samples_per_worker(total, rank=rank, world_size=world, worker=worker, num_workers=workers)

    def run(self) -> Iterator[dict[str, Any]]:
        specs = list(self.specs)
        if self.shuffle:
            random.Random(f"medlocker.shards/{self.seed}/{self.epoch}").shuffle(specs)
        self.epoch += 1
        rank, world, worker, workers = self._position()
        counts = [s.info.samples for s in specs]
        for i, select in split_samples(counts, rank=rank, world_size=world, worker=worker, num_workers=workers):
            yield {"url": specs[i].url, "spec": specs[i], "select": select}


class VerifiedStream:
    """Read-only stream that hashes what it yields and checks size + SHA-256 at the end.

    Reading past the pinned size raises at once; :meth:`finish` drains the rest
    (tar readers stop at the end-of-archive marker, before the padding) and raises
    :class:`IntegrityError` if the bytes differ from the manifest.
    """

    def __init__(self, raw: IO[bytes], *, size: int, sha256: str, name: str) -> None:
        self.raw = raw
        self.expected_size = size
        self.expected_sha256 = sha256
        self.name = name
        self._sha = hashlib.sha256()
        self._size = 0

    def read(self, n: int = -1) -> bytes:
        # Never ask for more than one byte past the signed size: a lying tar header
        # or an oversized object cannot make us buffer more than the shard.
        limit = self.expected_size - self._size + 1
        data = self.raw.read(limit if n is None or n < 0 else min(n, limit))
        self._sha.update(data)
        self._size += len(data)
        if self._size > self.expected_size:
            raise IntegrityError(f"{self.name}: shard is longer than the {self.expected_size} bytes the manifest signs")
        return data

    @property
    def remaining(self) -> int:
        """Bytes left before the signed size is reached."""
        return self.expected_size - self._size

    def finish(self) -> None:
        """Drain the stream and raise unless size and digest match the manifest."""
        while self.read(_READ_CHUNK):
            pass
        if self._size != self.expected_size or "sha256:" + self._sha.hexdigest() != self.expected_sha256:
            raise IntegrityError(
                f"{self.name}: shard does not match the size/SHA-256 in the signed manifest; re-download it"
            )

    def close(self) -> None:
        self.raw.close()


def _spool(stream: VerifiedStream, spool_bytes: int) -> IO[bytes]:
    """Copy a whole shard into memory (up to ``spool_bytes``) or a temporary file, verified.

    Returns the spool rewound to its start, only after the bytes matched the size and
    SHA-256 of the signed manifest; the caller closes it (a spilled file is deleted then).
    """
    spool = tempfile.SpooledTemporaryFile(max_size=spool_bytes)
    try:
        while chunk := stream.read(_READ_CHUNK):
            spool.write(chunk)
        stream.finish()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


def _open_shards(
    src: Iterable[dict[str, Any]],
    *,
    dataset_id: str,
    storage_options: dict[str, Any] | None = None,
    spool_bytes: int = SPOOL_BYTES,
) -> Iterator[dict[str, Any]]:
    for item in src:
        spec: ShardSpec = item["spec"]
        info = spec.info
        try:
            data = _fs.read_bytes(spec.index_url, storage_options, max_size=MAX_INDEX_BYTES)
        except FileNotFoundError:
            raise IntegrityError(f"{spec.index_url}: index listed in the manifest is missing") from None
        index = parse_index(data, expected_sha256=info.index_sha256, shard=info.name, dataset_id=dataset_id)
        if len(index) != info.samples:
            raise FormatError(f"{spec.index_url}: lists {len(index)} samples, the manifest says {info.samples}")
        try:
            raw = _fs.open_read(spec.url, storage_options)
        except FileNotFoundError:
            raise IntegrityError(f"{spec.url}: shard listed in the manifest is missing") from None
        stream = VerifiedStream(raw, size=info.size, sha256=info.sha256, name=spec.url)
        try:
            spool = _spool(stream, spool_bytes)
        finally:
            with contextlib.suppress(Exception):
                stream.close()
        yield {"url": spec.url, "spec": spec, "index": index, "spool": spool, "select": item.get("select")}


open_shards = wds.pipelinefilter(_open_shards)


def _read_exact(f: IO[bytes], n: int, url: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise IntegrityError(f"{url}: shard is truncated")
    return data


def _parse_octal(field: bytes, what: str, url: str) -> int:
    digits = field.rstrip(b"\0 ")
    if not digits.isdigit() or b"8" in digits or b"9" in digits:  # plain octal only
        raise IntegrityError(f"{url}: malformed tar header ({what})")
    return int(digits, 8)


def _tar_members(f: IO[bytes], size: int, url: str) -> Iterator[tuple[str, str, bytes]]:
    """``(key, ext, data)`` for every member of a USTAR file of ``size`` bytes.

    A strict reader for exactly what the writer makes: regular files in plain
    USTAR headers with valid checksums and our member names; no PAX/GNU
    extensions, links, directories or compression. Stricter than ``tarfile``
    (nothing we never write is interpreted) and several times faster, reading
    each member with one call. It stops at the end-of-archive block. Callers give
    it a verified spool; it still checks every bound itself (it is fuzzed alone).
    """
    pos = 0
    while True:
        header = _read_exact(f, _TAR_BLOCK, url)
        pos += _TAR_BLOCK
        if header == _ZERO_BLOCK:
            return
        checksum = _parse_octal(header[148:156], "checksum", url)
        if checksum != sum(header) - sum(header[148:156]) + 8 * 32:
            raise IntegrityError(f"{url}: tar header checksum mismatch")
        if header[257:265] != b"ustar\x0000" or header[156:157] not in (b"0", b"\0") or header[345] != 0:
            raise IntegrityError(f"{url}: unexpected tar entry (not a plain USTAR regular file)")
        name = header[:100].rstrip(b"\0")
        parts = layout.split_member_name(name.decode("ascii", "replace"))
        if parts is None or 0 in name:
            raise IntegrityError(f"{url}: unexpected tar member {name!r}")
        n = _parse_octal(header[124:136], "size", url)
        padded = n + (-n % _TAR_BLOCK)
        if padded > size - pos:
            raise IntegrityError(f"{url}: tar member {name!r} is larger than the signed shard")
        data = _read_exact(f, n, url)
        if padded != n:
            _read_exact(f, padded - n, url)
        pos += padded
        yield parts[0], parts[1], data


def _samples_of(shard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every sample of one verified spool, grouped by key and checked against the index."""
    url, entries, f = shard["url"], shard["index"].entries, shard["spool"]
    current: dict[str, Any] | None = None
    seen = 0
    for key, ext, data in _tar_members(f, shard["spec"].info.size, url):
        if current is None or key != current["__key__"]:
            if current is not None:
                yield _complete(current, url)
                if key <= current["__key__"]:
                    raise IntegrityError(f"{url}: sample {key!r} is out of order or repeated")
            if key not in entries:
                raise IntegrityError(f"{url}: sample {key!r} is not in the signed index")
            current = {"__key__": key, "__url__": url, "__entry__": entries[key]}
            seen += 1
        if ext in current:
            raise IntegrityError(f"{url}: sample {key!r} has two {ext!r} members")
        current[ext] = data
    if current is not None:
        yield _complete(current, url)
    if seen != len(entries):
        raise IntegrityError(f"{url}: shard lacks {len(entries) - seen} sample(s) listed in its index")


def _expand_shards(src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for shard in src:
        select: range | None = shard.get("select")
        try:
            # The spool already matched the signed digest: what is walked is what the owner signed.
            for i, sample in enumerate(_samples_of(shard)):
                if select is None or i in select:
                    yield sample
        finally:
            shard["spool"].close()


def _complete(sample: dict[str, Any], url: str) -> dict[str, Any]:
    missing = [ext for ext in layout.MEMBER_EXTENSIONS if ext not in sample]
    if missing:
        raise IntegrityError(f"{url}: sample {sample['__key__']!r} lacks member(s) {missing}")
    return sample


expand_shards = wds.pipelinefilter(_expand_shards)


def iter_samples(
    dest: str,
    manifest: Manifest,
    *,
    shards: Iterable[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """The raw samples of a verified manifest's shards, without a licence.

    The same strict walk as the licensed pipeline (index digest, every key in the
    index, shard size + SHA-256 before any of its samples), and each sample's ``.png``,
    ``.mlseal`` and ``.cls`` bytes are checked against the signed index before
    they are yielded. Yields ``{"__key__", "__url__", "__entry__", ext: bytes}``.

    Args:
        shards: names of the shards to read (default: all, in manifest order).

    Raises:
        IntegrityError / FormatError: as the licensed reader; KeyError: an unknown shard name.
    """
    specs = shard_specs(dest, manifest)
    if shards is not None:
        by_name = {s.info.name: s for s in specs}
        specs = tuple(by_name[name] for name in shards)
    opened = _open_shards(({"url": s.url, "spec": s} for s in specs), dataset_id=manifest.dataset_id,
                          storage_options=storage_options)
    for sample in _expand_shards(opened):
        check_member_digests(sample, sample["__entry__"])
        yield sample


def _where(sample: dict[str, Any]) -> str:
    return f"{sample['__url__']}: sample {sample['__key__']!r}"


def check_member_digests(sample: dict[str, Any], entry: IndexEntry) -> None:
    """Check the raw ``.png``, ``.mlseal`` and ``.cls`` bytes against the index (before any use)."""
    if sha256_digest(sample[layout.EXT_IMAGE]) != entry.wm_sha256:
        raise IntegrityError(f"{_where(sample)}: watermarked image does not match the signed digest")
    if sha256_digest(sample[layout.EXT_SEAL]) != entry.payload_sha256:
        raise IntegrityError(f"{_where(sample)}: sealed payload does not match the signed digest")
    if sample[layout.EXT_LABEL] != str(entry.label).encode("ascii"):
        raise IntegrityError(f"{_where(sample)}: label member does not match the signed label")


def _metadata(sample: dict[str, Any], entry: IndexEntry, *, dataset_id: str, classes: Sequence[str]) -> dict[str, Any]:
    """Check the ``.json`` member is exactly what the writer makes from signed facts."""
    if entry.label >= len(classes):
        raise FormatError(f"{_where(sample)}: label {entry.label} has no class in the manifest")
    header = png_header(sample[layout.EXT_IMAGE])
    if header is None:
        raise FormatError(f"{_where(sample)}: image is not a PNG")
    meta = public_metadata(dataset_id, entry.key, entry.label, classes[entry.label], header[0], header[1])
    if sample[layout.EXT_META] != canonical_json(meta):
        raise IntegrityError(f"{_where(sample)}: metadata member does not match the signed facts")
    return meta


def _decode_png(png: bytes, meta: dict[str, Any], where: str) -> Image.Image:
    """Decode a PNG of the size its signed metadata declares, refusing bombs before decoding."""
    width, height = meta["width"], meta["height"]
    if width * height > MAX_IMAGE_PIXELS:
        raise FormatError(f"{where}: image of {width}x{height} px is larger than the {MAX_IMAGE_PIXELS} px accepted")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(png), formats=("PNG",))
            if img.size != (width, height):
                raise FormatError(f"{where}: image is {img.size[0]}x{img.size[1]}, its metadata says {width}x{height}")
            img.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise FormatError(f"{where}: cannot decode the image: {exc}") from None
    return img


def restore_sample(
    sample: dict[str, Any], entry: IndexEntry, *, content_key: bytes, dataset_id: str, classes: Sequence[str]
) -> dict[str, Any]:
    """Turn one raw, grouped sample into the verified original.

    Order: member digests and metadata -> open the sealed payload -> decode PNG ->
    paste the original box -> compare the pixel digest with the owner's
    ``orig_sha256``. The last check is what stops a licensee who holds the
    content key from forging samples other licensees would accept.

    Returns:
        ``{"__key__", "__url__", "image" (PIL RGB), "label", "class", "meta"}``.

    Raises:
        IntegrityError: Any byte or pixel that does not match what the owner signed.
        FormatError: A malformed payload or image.
    """
    key = entry.key
    check_member_digests(sample, entry)
    meta = _metadata(sample, entry, dataset_id=dataset_id, classes=classes)
    plaintext = open_payload(
        content_key, sample[layout.EXT_SEAL], dataset_id=dataset_id, sample_key=key, watermarked_digest=entry.wm_sha256
    )
    img = _decode_png(sample[layout.EXT_IMAGE], meta, _where(sample))
    if img.mode != "RGB":
        raise FormatError(f"{_where(sample)}: image mode is {img.mode}, expected RGB")
    restore_image(img, plaintext)
    if pixel_digest_of_raw(img.height, img.width, 3, img.tobytes()) != entry.orig_sha256:
        raise IntegrityError(f"{_where(sample)}: restored pixels do not match the original digest the owner signed")
    return {
        "__key__": key,
        "__url__": sample["__url__"],
        "image": img,
        "label": entry.label,
        "class": meta["class"],
        "meta": meta,
    }


def _restore_samples(
    src: Iterable[dict[str, Any]], *, content_key: bytes, dataset_id: str, classes: Sequence[str]
) -> Iterator[dict[str, Any]]:
    for sample in src:
        yield restore_sample(
            sample, sample["__entry__"], content_key=content_key, dataset_id=dataset_id, classes=classes
        )


restore_samples = wds.pipelinefilter(_restore_samples)


@dataclass
class DatasetReport:
    """Outcome of :func:`check_dataset`: ``ok`` when ``problems`` is empty."""

    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_dataset(
    dest: str,
    owner: PublicIdentity,
    *,
    storage_options: dict[str, Any] | None = None,
    on_shard: Callable[[ShardInfo], None] | None = None,
    allow_insecure_test_seed: bool = False,
) -> DatasetReport:
    """Verify a dataset without a licence: signature, shards, indexes, public members, catalog files.

    Checks the manifest signature, every shard's size and SHA-256, every index
    digest, and every sample's PNG, payload, label and metadata bytes against the
    index. Problems are collected per shard rather than stopping at the first.

    Args:
        dest: Dataset folder or fsspec URL.
        owner: The pinned owner key.
        storage_options: fsspec options for ``dest``.
        on_shard: Called after each shard is checked (progress display).
        allow_insecure_test_seed: Check a dataset the owner packed with a test seed
            instead of reporting it as a problem (tests only).
    """
    report = DatasetReport()
    try:
        manifest = read_manifest(
            dest, owner, storage_options=storage_options, allow_insecure_test_seed=allow_insecure_test_seed
        )
    except MedLockerError as exc:
        report.problems.append(str(exc))
        return report
    for spec in shard_specs(dest, manifest):
        try:
            (shard,) = _open_shards([{"spec": spec}], dataset_id=manifest.dataset_id, storage_options=storage_options)
            for sample in _expand_shards([shard]):
                entry = sample["__entry__"]
                check_member_digests(sample, entry)
                _metadata(sample, entry, dataset_id=manifest.dataset_id, classes=manifest.classes)
                report.samples += 1
            report.shards += 1
        except MedLockerError as exc:
            report.problems.append(str(exc))
        except OSError as exc:
            report.problems.append(f"{spec.url}: cannot read: {exc}")
        if on_shard is not None:
            on_shard(spec.info)
    report.problems += check_catalog(dest, manifest, storage_options)  # the wids index and the dataset card
    return report
