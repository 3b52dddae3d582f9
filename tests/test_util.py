"""medlocker.util: atomic writes and RFC 3339 times."""

from datetime import datetime, timedelta, timezone

import pytest

from medlocker.util import atomic_open, atomic_write, parse_rfc3339, rfc3339


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "f.json"
    atomic_write(path, "one")
    atomic_write(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]  # no temporary left


def test_atomic_open_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w") as f:
            f.write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_rfc3339_round_trip_and_strictness():
    t = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert rfc3339(t) == "2025-01-02T01:04:05Z"
    assert parse_rfc3339("2025-01-02T01:04:05Z") == t
    for bad in ("2025-01-02 01:04:05Z", "2025-13-02T01:04:05Z", "2025-01-02T01:04:05+00:00", 20250102, None):
        with pytest.raises(ValueError):
            parse_rfc3339(bad)
    with pytest.raises(ValueError):
        rfc3339(datetime(2025, 1, 2))
    with pytest.raises(TypeError):
        rfc3339("2025-01-02T01:04:05Z")
