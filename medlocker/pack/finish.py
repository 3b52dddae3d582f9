"""Stage 4, finish: render the exact watermarked pixels, encode PNG, seal and commit (one sample).

Runs in a worker thread; everything random about a sample (nonce, salt) is derived from
the run secret and the sample key, so the bytes do not depend on timing or rank.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from ..crypto import commit, seal_payload
from ..owner import ParamRecord, param_bytes, png_bytes
from ..shards import SampleRecord, build_restoration, pixel_digest, sha256_digest
from ..watermark import Placement

if TYPE_CHECKING:
    from .read import Loaded
    from .run import PackRun

__all__ = ["finish_sample"]


def finish_sample(run: PackRun, item: Loaded, result: Any, *, clean_correct: bool) -> tuple[SampleRecord, ParamRecord]:
    """The published sample and the owner's parameter record of one searched image."""
    record, image, secrets = item.record, item.image, run.secrets
    p: Placement = result.placement
    logo, logo_sha256 = run.logo, run.logo_sha256
    own_png = png_bytes(result.logo) if result.logo is not None else None  # per-image colours: its own logo
    if own_png is not None:
        logo, logo_sha256 = result.logo, sha256_digest(own_png)
    layer = result.layer  # the adversarial layer outside the logo, if any: applied first, committed, sealed
    layer_bytes = None if layer is None else layer.to_bytes()
    png = png_bytes(result.stored_image(image, logo))
    wm_digest = sha256_digest(png)
    payload = seal_payload(
        secrets.content_key,
        build_restoration(image, p.box, layer),
        dataset_id=secrets.dataset_id,
        sample_key=record.key,
        watermarked_digest=wm_digest,
        nonce=secrets.sample_bytes("nonce", record.key, 12),
    )
    salt = secrets.sample_bytes("salt", record.key, 32)
    placement = p.to_dict()
    commitment = commit(
        param_bytes(dataset_id=secrets.dataset_id, key=record.key, placement=placement, logo_sha256=logo_sha256,
                    layer_sha256=None if layer_bytes is None else sha256_digest(layer_bytes)), salt
    )
    h, w = image.shape[:2]
    sample = SampleRecord(
        key=record.key,
        label=record.label,
        class_name=run.source.classes[record.label],
        png=png,
        width=w,
        height=h,
        orig_sha256=pixel_digest(image),
        payload=payload,
        commitment=commitment,
    )
    param = ParamRecord(
        key=record.key,
        label=record.label,
        shard=item.shard,
        placement=placement,
        salt=salt.hex(),
        commitment=commitment,
        success=bool(result.success),
        queries=int(result.queries),
        margin=float(result.margin),
        status=result.status,
        clean_correct=bool(clean_correct),
        logo_png=base64.b64encode(own_png).decode() if own_png is not None else None,
        layer=base64.b64encode(layer_bytes).decode() if layer_bytes is not None else None,
    )
    return sample, param
