"""The one module that names every file and member of a protected dataset."""

from __future__ import annotations

import pytest

from medlocker.errors import FormatError
from medlocker.shards import index_name, layout, shard_name


def test_layout_names() -> None:
    assert shard_name("shard", 0) == "shard-000000.tar"
    assert shard_name("train_a-1", 1234567) == "train_a-1-1234567.tar"
    assert index_name("shard-000003.tar") == "shard-000003.index.json"
    assert layout.MANIFEST_NAME == "manifest.dsse.json"
    assert layout.member_name("k1", "mlseal") == "k1.mlseal"
    assert layout.split_member_name("k1.png") == ("k1", "png")
    for bad in ("k1.pyd", "k1.png.gz", "__key__.png", "a/b.png", "k1"):
        assert layout.split_member_name(bad) is None
    for bad_key in ("", "a.b", "a/b", "_x", "x" * 65, "é"):
        with pytest.raises(ValueError):
            layout.validate_key(bad_key)
    for bad_prefix in ("", "a.b", "a/b"):
        with pytest.raises(ValueError):
            shard_name(bad_prefix, 0)
    with pytest.raises(ValueError):
        shard_name("shard", -1)
    with pytest.raises(ValueError):
        index_name("../shard-000000.tar")


@pytest.mark.parametrize("doc", [[], {"format": "medlocker.index"}, {"format": "x", "version": 1},
                                 {"format": "medlocker.index", "version": True},
                                 {"format": "medlocker.index", "version": 1.0},
                                 {"format": "medlocker.index", "version": 2}])
def test_format_header_check(doc) -> None:
    with pytest.raises(FormatError, match="f.json"):
        layout.check_format_header(doc, fmt="medlocker.index", version=1, where="f.json")


def test_format_header_check_accepts_exactly_its_version() -> None:
    doc = {"format": "medlocker.index", "version": 1, "x": 0}
    assert layout.check_format_header(doc, fmt="medlocker.index", version=1, where="f.json") is doc
