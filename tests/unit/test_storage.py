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
