"""Imported once, in the local engine's fork server (see ``forkserver``), never by the driver.

The worker code every job runs, imported last in the server: the job's model backend and its
framework come before it (``models.worker_modules``: torch and the torch backend for most jobs;
Caffe's protobuf reader, onnxruntime or ``transformers``' backend only for a job of that kind), so
every worker forked from the server shares all these pages. Then ``gc.freeze()``: a worker's
garbage collector would otherwise write to the header of every inherited object on its first full
collection, copying those pages into each worker (measured: 40 MB per worker).

When the driver is gone the server leaves with ``os._exit``: the interpreter's teardown after
torch took 0.15 s, and the server holds the driver's stdout and stderr, so whoever reads those
(a script capturing the command's output, a pipe) waited that long for their end after the
command itself had exited. Ray's actors import this module too; they exit Ray's way.
"""

import atexit
import contextlib
import gc
import os
import sys
from multiprocessing import forkserver

import numpy  # noqa: F401

import gristmill.engines.runner
import gristmill.tuning  # noqa: F401
from gristmill.loader.shm import quiet_tracker


def _in_fork_server() -> bool:
    """Whether this import is the fork server's preload (its ``main`` is on the stack)."""
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code is forkserver.main.__code__:
            return True
        frame = frame.f_back
    return False


def _leave() -> None:
    """Registered last, so run first of the exit handlers: the server has nothing to flush but
    its streams, and nobody reads its exit status."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(1 if getattr(sys, "last_value", None) is not None else 0)


quiet_tracker()  # in the server, so in every worker forked from it
if _in_fork_server():  # its workers end with os._exit before any exit handler could run
    atexit.register(_leave)

gc.collect()
gc.freeze()
