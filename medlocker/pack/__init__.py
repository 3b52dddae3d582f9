"""Packing: source images -> protected, signed WebDataset shards.

The run is six stages over one :class:`~medlocker.pack.run.PackRun` (the opened run
secrets, the communicator, the configuration, the device, the destination); a shard is
the unit of work, of ``--resume`` and of distribution across ranks::

    stage    module               does                                               writes to
    plan     pack/preflight.py    classes vs the surrogates', image size vs logo     -
             pack/publish.py      secrets local and apart, destination exclusive     -
             pack/plan.py         open/resume the run (run.json), fix the logo       secrets/
                                  (learned once), list the shards left
    read     pack/read.py         load + resize, lesion boxes from mask files,       -
                                  reject images too small for the logo
    search   pack/search.py       Grad-CAM boxes where no mask, watermark search     -
                                  (watermark/engine.py, watermark/optim/)
    finish   pack/finish.py       render exact + PNG, seal the original pixels       -
                                  under the logo, salted commitment
    write    pack/write.py        shard tar + index (shards/writer.py),              dest/, secrets/progress/
                                  then the shard's checkpoint
    sign     pack/sign.py         gather checkpoints over ranks, params.jsonl,       secrets/, dest/manifest
                                  rejects.jsonl, signed manifest (shards/manifest.py)
             pack/publish.py      --replace: remove what the new manifest omits     dest/

:func:`pack` (``pack/pipeline.py``) runs them: group g+1 is read while group g is
searched and group g-1 written. Every file of the secrets folder is named in
``medlocker/owner.py``, every file of the dataset in ``medlocker/shards/layout.py``.

Shard ``i`` always holds source records ``[i * shard_size, (i + 1) * shard_size)``
and every random choice about a sample is derived from the run secret and the
sample key, so a resumed or distributed run writes the same bytes as a single
uninterrupted one.
"""

from __future__ import annotations

from .config import PackConfig, PackSummary, created_time, default_read_processes
from .pipeline import pack
from .publish import DestinationInUseError
from .read import load_record
from .run import PackRun

_load = load_record  # the name report/packed.py and older callers import

__all__ = ["DestinationInUseError", "PackConfig", "PackRun", "PackSummary", "created_time", "default_read_processes", "load_record", "pack"]
