"""The owner's secrets folder (medlocker.owner): its names, its permissions, its round trip."""

from __future__ import annotations

import json
import stat
from datetime import datetime, timezone

import pytest
from shardkit import fixed_identity

from medlocker.errors import FormatError
from medlocker.owner import (
    LOGO_FILE,
    PARAMS_FILE,
    PROGRESS_DIR,
    REJECTS_FILE,
    RUN_FILE,
    OwnerSecrets,
    ParamRecord,
    make_secrets_folder,
    new_run,
    progress_name,
)

OWNER = fixed_identity("owner")
CREATED = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_progress_names_come_from_one_function():
    assert progress_name(0) == "shard-000000.json"
    assert progress_name(1234567) == "shard-1234567.json"
    for bad in (-1, True, 1.0, "3"):
        with pytest.raises(ValueError, match="non-negative int"):
            progress_name(bad)


def test_a_new_run_lays_out_an_owner_only_folder_and_reopens(tmp_path):
    root = tmp_path / "secrets"
    run = new_run(root, OWNER, created=CREATED, settings={"shard_size": 3}, test_seed=7)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / RUN_FILE).stat().st_mode) == 0o600
    assert (root / PROGRESS_DIR).is_dir()
    assert run.progress_file(5) == root / PROGRESS_DIR / progress_name(5)
    assert (run.params_path, run.rejects_path, run.logo_path) == (root / PARAMS_FILE, root / REJECTS_FILE,
                                                                  root / LOGO_FILE)
    info = json.loads((root / RUN_FILE).read_text())
    assert info["insecure_test_seed"] is True and run.content_key.hex() not in (root / RUN_FILE).read_text()
    again = OwnerSecrets.load(root, OWNER)
    assert (again.dataset_id, again.content_key, again.run_secret, again.created) == (
        run.dataset_id, run.content_key, run.run_secret, CREATED)
    assert again.sample_bytes("salt", "k", 32) == run.sample_bytes("salt", "k", 32) != run.sample_bytes("salt", "j", 32)
    with pytest.raises(FileExistsError, match="--resume"):
        new_run(root, OWNER, created=CREATED, settings={})
    with pytest.raises(FormatError, match="--owner"):
        OwnerSecrets.load(root, fixed_identity("someone else"))
    with pytest.raises(FormatError, match="--resume"):
        run.params()  # the run has not finished


def test_make_secrets_folder_is_idempotent(tmp_path):
    root = make_secrets_folder(tmp_path / "a" / "b")
    assert make_secrets_folder(root) == root and (root / PROGRESS_DIR).is_dir()


def test_param_records_round_trip_and_keep_the_old_layout_without_a_logo():
    p = ParamRecord(key="k", label=1, shard=0, placement={"x": 1, "y": 2, "w": 3, "h": 4, "opacity": 200},
                    salt="00", commitment="c", success=True, queries=5, margin=0.5, status="fooled",
                    clean_correct=True)
    assert "logo_png" not in p.to_dict()
    assert ParamRecord.from_dict(p.to_dict()) == p
