"""The Ray engine's ``Backend``: connects and starts the actors as soon as OUT is locked.

A module apart from the engine (``ray.py``) because every job's spec is checked against it
(``engines.base.check``: its options, object storage) before anything starts: it imports Ray's
engine, and with it the runner and numpy, only when a Ray job starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import ledger

if TYPE_CHECKING:
    from ..prepared import PreparedJob
    from ..spec import JobSpec
    from .ray import RayEngine


class RayBackend:
    """The Ray engine for one job: connects and starts the actors now (a ``Backend``)."""

    calibrates = False  # actors are planned from the cluster's nodes, not this machine's rates
    remote_out = False  # actors on other nodes write OUT: a filesystem every node sees
    options = ("ray_address",)

    def __init__(self, spec: JobSpec) -> None:
        from .ray import prestart

        self.actors = prestart(spec)

    def devices(self) -> list[str]:
        shape = self.actors.shape
        return [shape.device] * shape.count

    def settle(self) -> None:
        """Nothing: the actors run on the cluster's cores, not the driver's."""

    def engine(self, job: PreparedJob, on_event: Callable[[Any], None]) -> RayEngine:
        from .ray import RayEngine

        inputs_path = job.inputs_path or os.path.join(job.spec.out, ledger.INPUTS_FILE)
        return RayEngine(job.spec, inputs_path, job.workers, on_event, self.actors)

    def close(self) -> None:
        self.actors.close()
