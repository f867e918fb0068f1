"""Transient object-storage faults on tars: each tar's first GET is refused with 503 SlowDown and
its second is cut mid-body; the job must retry through both and lose nothing.

A small HTTP proxy on 127.0.0.1 stands between the clients (the driver, the workers, the loaders:
``AWS_ENDPOINT_URL`` points at it) and the S3-compatible server; only GETs of ``.tar`` objects are
faulted, everything else is passed through unchanged.
"""

from __future__ import annotations

import collections
import http.client
import http.server
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from faultkit import run
from srckit import JOB, assert_same_features

pytestmark = pytest.mark.slow
BUCKET = "gristmill-flaky"
SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")


class FaultyProxy(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.gets: collections.Counter[str] = collections.Counter()
        self.faults: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FaultyProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _forward(self) -> None:
        path = urlsplit(self.path).path
        fault = ""
        if self.command == "GET" and path.endswith(".tar"):
            with self.server.lock:
                self.server.gets[path] += 1
                fault = {1: "503", 2: "cut"}.get(self.server.gets[path], "")
                if fault:
                    self.server.faults.append((path, fault))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if fault == "503":
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(SLOWDOWN)))
            self.end_headers()
            self.wfile.write(SLOWDOWN)
            return
        up = http.client.HTTPConnection(self.server.upstream.hostname, self.server.upstream.port,
                                        timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        up.request(self.command, self.path, body=body, headers=headers)
        reply = up.getresponse()
        data = reply.read()
        self.send_response(reply.status)
        for key, value in reply.getheaders():
            if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(key, value)
        # a HEAD reply has no body but the object's length
        self.send_header("Content-Length", reply.getheader("Content-Length", "0")
                         if self.command == "HEAD" else str(len(data)))
        if fault == "cut":
            self.send_header("Connection", "close")
        self.end_headers()
        if fault == "cut":  # half the promised body, then the connection is gone
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)
        up.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward


@pytest.fixture()
def flaky_endpoint(s3_server, monkeypatch):
    proxy = FaultyProxy(s3_server["AWS_ENDPOINT_URL"])
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{proxy.server_address[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    try:
        yield proxy
    finally:
        proxy.shutdown()


def test_slowdown_and_cut_bodies_are_retried_and_lose_nothing(s3_server, flaky_endpoint,
                                                              wds_dir: Path, loose_run, tmp_path):
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server["AWS_ENDPOINT_URL"]})
    fs.mkdir(BUCKET)
    fs.put(str(wds_dir) + "/", f"{BUCKET}/wds/", recursive=True)
    out = tmp_path / "out"
    done = run(f"s3://{BUCKET}/wds/shard-{{00000..00002}}.tar", "-o", str(out), *JOB)
    assert done.returncode == 0, done.stderr
    assert_same_features(out, loose_run)  # every sample, once, the same values
    faulted = {path for path, _ in flaky_endpoint.faults}
    assert len(faulted) == 3  # every tar was refused once and cut once on its way
    assert {kind for _, kind in flaky_endpoint.faults} == {"503", "cut"}
