"""The heap a worker warms before its first batch (``tuning.touch_heap``): measured in page faults,
never in time. Each case runs in a fresh interpreter: the allocator settings are per process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")

MB = 1 << 20


def in_fresh_process(body: str) -> dict:
    code = textwrap.dedent("""
        import ctypes, json, resource
        from gristmill.tuning import heap_bytes, touch_heap, tune_allocator

        libc = ctypes.CDLL("libc.so.6")
        libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]

        def faults():
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

        def filled(size):  # what a model's tensor does: malloc, then write every byte
            block = libc.malloc(size)
            ctypes.memset(block, 1, size)
            return block

        assert tune_allocator()
        """) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_warmed_heap_serves_the_next_allocations_without_page_faults() -> None:
    found = in_fresh_process(f"""
        size = 128 * {MB}
        cold = faults(); a = filled(size); cold = faults() - cold  # a fresh heap
        libc.free(a)
        grown = heap_bytes()
        touched = touch_heap(2 * size, stop=lambda: False)  # beyond what the heap has
        warm = faults(); b = filled(2 * size); warm = faults() - warm
        print(json.dumps({{"cold": cold, "warm": warm, "touched": touched,
                          "heap_before": grown, "heap_after": heap_bytes()}}))
        """)
    pages = 128 * MB // 4096
    assert found["cold"] > pages * 0.9  # the kernel faults in every page of a fresh heap
    assert found["touched"] == 256 * MB
    assert found["heap_after"] >= found["heap_before"] + 128 * MB  # kept, not given back
    assert found["warm"] < pages * 0.05, found  # twice the size, almost no fault


def test_warming_stops_when_asked_between_chunks() -> None:
    found = in_fresh_process("""
        asked = []
        touched = touch_heap(256 << 20, stop=lambda: asked.append(1) or len(asked) > 2)
        print(json.dumps({"touched": touched, "asked": len(asked)}))
        """)
    assert found == {"touched": 32 * MB, "asked": 3}  # two chunks of 16 MB, then stopped
