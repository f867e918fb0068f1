"""Where local worker processes come from: a fork server with torch and the worker code imported.

A spawned worker imports torch itself (about 2 s and 150 MB of private memory each, measured on
the ResNet-50 benchmark). Instead the local engine starts its workers from Python's fork server
with ``gristmill.engines.preload`` imported there: each worker is a fork of that server, so the
imported modules are pages every worker shares, and starting one costs a fork. The driver starts the
server (``warm``) before it prepares the job, so the server's imports overlap the driver's own
model building; ``settle`` waits for them before the calibration timings, which a process importing
torch on the same cores would skew.

The server is a child of the driver (the fork server runs a fresh interpreter, never a copy of the
driver) and exits when the driver does; workers are its children, with ``PR_SET_PDEATHSIG``, so
they follow, from the moment they are forked (``server_children``). It outlives a job in a long
Python session and is reused by the next job: its environment is the driver's at the time it
started. Where the platform has no fork server (Windows),
workers are spawned as before.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
from collections.abc import Sequence
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING

from .. import sinks
from ..loader.launch import GuardedSpawnContext
from ..models import worker_modules

if TYPE_CHECKING:
    from ..spec import JobSpec

log = logging.getLogger(__name__)

PRELOAD = "gristmill.engines.preload"
GUARD = "gristmill.engines.server_children"  # its children die with the server (see there)


def context(modules: Sequence[str] = ()) -> BaseContext:
    """The context local workers start from (a fork server when the platform has one).

    ``modules``: the job's (``server_modules``), imported by the server before ``PRELOAD``, whose
    ``gc.freeze()`` must come last.
    """
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    # takes effect when the server starts; a server already running keeps its modules, and a
    # worker then imports what it lacks itself
    ctx.set_forkserver_preload([GUARD, *modules, PRELOAD])
    return ctx


def server_modules(spec: JobSpec) -> tuple[str, ...]:
    """What the server imports for ``spec``'s workers (``context``): the model's backend and
    framework (``models.worker_modules``), and the module of the job's sink, which a worker would
    otherwise import (HDF5's: h5py, 20-30 ms) before it starts its loaders."""
    return (*worker_modules(spec.model.ref), sinks.SINKS[spec.format].partition(":")[0])


def spawn_context() -> BaseContext:
    """Where workers come from once the fork server keeps failing (see ``local``): spawned, dying
    with the driver from their first instruction (``loader.launch``)."""
    if os.name != "posix":
        return mp.get_context("spawn")
    return GuardedSpawnContext()


def release_server() -> None:
    """In a child of the fork server: close the server's "alive" pipe end that Python hands
    every child (so that it could start processes through the same server; workers start their
    loaders by spawn). While a child holds it the server cannot see the driver die, so a worker
    inside a long model call outlived a SIGKILLed driver, and with it the server: its
    ``PR_SET_PDEATHSIG`` waits for the server's death."""
    import contextlib
    from multiprocessing import forkserver

    server = forkserver._forkserver  # Python keeps the fd there; no public way to give it back
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
        server._forkserver_alive_fd = None


def _noop() -> None:
    """The probe's body: its start is the point (the server answers once preloaded)."""


class Warmup:
    """Start the server in the background; ``settle()`` returns once its imports are done."""

    def __init__(self, modules: Sequence[str] = ()) -> None:
        self.modules = tuple(modules)
        self.thread = threading.Thread(target=self._start, name="gristmill-forkserver",
                                       daemon=True)
        self.thread.start()

    def _start(self) -> None:
        process = context(self.modules).Process(target=_noop, name="gristmill-forkserver-probe",
                                                daemon=True)  # an exiting driver does not wait
        try:
            process.start()  # answered only once the server has imported the preload module
            process.join()
        except Exception:  # the server was killed while starting: the engine restarts it
            log.debug("fork server warm-up failed", exc_info=True)

    def settle(self) -> None:
        self.thread.join()


def warm(modules: Sequence[str] = ()) -> Warmup:
    """Start the fork server now, overlapping its imports with the caller's work; ``modules`` as
    for ``context``."""
    return Warmup(modules)
