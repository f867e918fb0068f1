"""report.html in a real headless browser (Debian's chromium, started here): no console message,
every chart drawn. The page has no script and forbids every fetch, so any console line (a blocked
request, a parse error) is a defect.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        pytest.skip("no chromium on this machine: `make setup` installs it with apt-get "
                    "(apt-get install -y chromium), which failed or is not available here")
    return found


def open_page(page: Path, profile: Path, *args: str) -> tuple[str, list[str]]:
    """(stdout, console lines) of headless chromium opening ``page`` with ``args`` (which must
    make it exit: ``--dump-dom`` or ``--screenshot``)."""
    proc = subprocess.Popen(
        [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", *args,
         page.resolve().as_uri()], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)  # its own group: its renderer and GPU processes go with it
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, stderr[-2000:]
    return stdout, [line for line in stderr.splitlines() if ":CONSOLE" in line]


def near(pixels: np.ndarray, colour: str, tol: int = 12) -> int:
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels[..., :3].astype(int) - rgb).max(axis=-1) <= tol).sum())


def test_the_console_check_sees_a_blocked_fetch_and_a_script_error(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
                   "content=\"default-src 'none'; script-src 'unsafe-inline'\"></head><body>"
                   '<img src="https://example.invalid/x.png"><script>nothing()</script></body>'
                   "</html>")
    _, console = open_page(bad, tmp_path / "profile", "--dump-dom")
    assert any("Content Security Policy" in line for line in console), console
    assert any("nothing is not defined" in line for line in console), console


def test_report_renders_every_chart_without_console_messages(reference, tmp_path):
    out, report = reference
    page = out / "report.html"
    dom, console = open_page(page, tmp_path / "profile", "--dump-dom")
    assert console == []
    assert dom.count("<svg") == 3
    assert dom.count('class="series"') == 1  # the throughput line
    assert dom.count('class="bar"') >= 3  # computing/writing/waiting and decoding/waiting
    assert dom.count('class="shard"') == report.shards  # one bar per shard on the timeline
    assert "model-bound" in dom or "decode-bound" in dom
    assert dom.count("<td>decode</td>") + dom.count("<td>read</td>") >= 1  # bad files grouped
    shot = tmp_path / "report.png"
    _, console = open_page(page, tmp_path / "profile", f"--screenshot={shot}",
                           "--window-size=1000,1700", "--hide-scrollbars")
    assert console == []
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert near(pixels, "#1f77b4") > 500  # the throughput line and the computing bars
    assert near(pixels, "#ff7f0e") > 50  # the loaders' decoding bars
    assert near(pixels, "#2ca02c") > 500  # committed shards on the timeline
