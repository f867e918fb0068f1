"""The local engine's ``Backend``: the fork server starts as soon as OUT is locked, its imports
(torch) overlapping the job's preparation.

A module apart from the engine (``local.py``) because the driver imports it, checks the spec
against it and starts it before anything else of the job: it imports only what starting the
fork server takes, and the worker stack (the runner, the sources, the supervisor, numpy) once the
job is prepared and its engine is built.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import ledger
from ..loader import shm
from . import forkserver

if TYPE_CHECKING:
    from ..prepared import PreparedJob
    from ..spec import JobSpec
    from .local import LocalEngine


class LocalBackend:
    """The local engine for one job: the fork server starts now, its imports overlapping the
    job's preparation (a ``Backend``)."""

    calibrates = True
    remote_out = True
    options: tuple[str, ...] = ()

    def __init__(self, spec: JobSpec) -> None:
        shm.quiet_tracker()
        self.warmup = forkserver.warm(forkserver.server_modules(spec))

    def devices(self) -> list[str] | None:
        return None

    def settle(self) -> None:
        self.warmup.settle()

    def engine(self, job: PreparedJob, on_event: Callable[[Any], None]) -> LocalEngine:
        from .local import LocalEngine  # the worker stack, once the fork server has started

        inputs_path = job.inputs_path or os.path.join(job.spec.out, ledger.INPUTS_FILE)
        return LocalEngine(job.spec, inputs_path, job.workers, on_event)

    def close(self) -> None:
        """Nothing: the fork server serves the next job of this Python session too."""
