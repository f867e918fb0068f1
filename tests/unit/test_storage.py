"""Storage helpers: retries of transient errors only, URLs never carry credentials."""

from __future__ import annotations

import pytest

from gristmill.errors import SpecError
from gristmill.sources import storage
from gristmill.spec import JobSpec


def test_transient_errors_are_retried_and_missing_objects_are_not(monkeypatch):
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("reset by peer")
        return b"ok"

    assert storage.retrying("x", flaky) == b"ok" and len(calls) == 3
    missing = []

    def gone():
        missing.append(1)
        raise FileNotFoundError("no such key")

    with pytest.raises(FileNotFoundError):
        storage.retrying("x", gone)
    assert len(missing) == 1
    always = []
    with pytest.raises(TimeoutError):
        storage.retrying("x", lambda: always.append(1) or (_ for _ in ()).throw(TimeoutError()))
    assert len(always) == storage.RETRIES


def test_urls_are_stored_without_credentials_and_refused_with_them():
    assert storage.redact("s3://key:secret@bucket/a.tar") == "s3://bucket/a.tar"
    assert storage.is_url("gs://b/x") and not storage.is_url("/data/x.tar")
    with pytest.raises(SpecError, match="must not hold credentials"):
        JobSpec(sources=("s3://AKIA:secret@bucket/data",), out="o").check()


def test_a_missing_storage_package_names_the_extra(monkeypatch):
    import fsspec

    def refuse(url, **kw):
        raise ImportError("Install gcsfs to access Google Storage")

    monkeypatch.setattr(fsspec.core, "url_to_fs", refuse)
    with pytest.raises(SpecError, match=r"pip install 'gristmill\[gcs\]'"):
        storage.filesystem("gs://bucket/x")


def test_a_brace_range_is_checked_with_one_listing_per_folder(tmp_path, monkeypatch):
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    from gristmill.sources import list_inputs

    fs = fsspec.filesystem("memory")
    for i in (0, 1, 3):
        fs.pipe(f"/bucket/shards/{i:03d}.tar", b"x")
        (tmp_path / f"{i:03d}.tar").write_bytes(b"x")
    listings = []
    real_ls = MemoryFileSystem.ls
    monkeypatch.setattr(MemoryFileSystem, "ls",
                        lambda self, path, **kw: listings.append(path) or real_ls(self, path, **kw))
    monkeypatch.setattr(MemoryFileSystem, "exists", lambda *a, **kw: pytest.fail("one request "
                                                                                  "per object"))
    for root in ("memory://bucket/shards", str(tmp_path)):
        inputs = list_inputs([f"{root}/{{000..001}}.tar"])
        assert inputs.raw_range(0, 2) == [f"{root}/000.tar".encode(), f"{root}/001.tar".encode()]
        assert [s.split(":")[0] for s in inputs.stamps] == ["1", "1"]  # sizes, from the listing
        with pytest.raises(SpecError, match=r"002.tar does not exist \(1 of 4 missing\)"):
            list_inputs([f"{root}/{{000..003}}.tar"])
    assert len(listings) == 2  # one per listing of the remote range
