"""The engine seam: where workers run is a ``Launcher`` of ``WorkerHandle``s; the rest is shared.

``supervisor.Supervisor`` is the one loop that hands shards out, collects receipts and replaces
lost workers, for every engine. An engine only says how to start a worker, talk to it and tell
that it is gone:

- ``local.py``: a process forked from the fork server, with its own pipe;
- ``ray.py``: a Ray actor, with one outstanding ``poll`` call.

``Backend`` is what ``api.execute`` holds for a job: started right after the spec is checked (so
the fork server's or the actors' imports overlap the job's preparation), it may decide the devices
(Ray: from the cluster), and it builds the ``Engine`` that runs the prepared job. ``backend(spec)``
picks it by ``spec.engine``; no caller branches on the engine's name. Each backend is a module of
its own (``local_backend.py``, ``ray_backend.py``) that imports its engine only when it builds
it (Ray: when it starts): every job's spec is checked against every backend's class, and the
local one starts its fork server before the driver imports numpy or the job's modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # types only: the command line reads BACKENDS before it starts the fork server
    from ..plan import Shard
    from ..prepared import PreparedJob
    from ..spec import JobSpec
    from .messages import ShardTask


class WorkerHandle(Protocol):
    """One worker, as the supervisor sees it. No method raises because the worker is gone."""

    index: int

    @property
    def pid(self) -> int:
        """Its process id (0 until known)."""

    def send(self, task: ShardTask) -> None:
        """Hand it a shard (a broken channel shows up through ``exit_reason``)."""

    def receive(self) -> list[Any]:
        """The messages that arrived since the last call, without waiting."""

    def exit_reason(self) -> str | None:
        """Why it is gone (``killed by SIGKILL``, ``exit code 1``, ...); None while it runs."""

    def kill(self) -> None:
        """Kill it now (a stalled worker)."""

    def stop(self) -> None:
        """Ask it to finish: stop its loaders, free its ring, exit. Does not wait."""

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for it to exit; True once it has."""

    def close(self) -> None:
        """Kill it if it still runs and free what it leaves behind (its ring, by name)."""


class Launcher(Protocol):
    """Starts workers of one kind and waits on them."""

    count: int  # workers to keep running
    setup_timeout: float | None  # fail when no worker has been ready this long (None: never)

    def start(self, index: int) -> WorkerHandle:
        """A new worker ``index``; a failure to start is a handle that is already gone."""

    def wait(self, handles: Sequence[WorkerHandle], timeout: float) -> list[WorkerHandle]:
        """Those of ``handles`` with something to receive (or that ended), within ``timeout``."""

    def tend(self) -> None:
        """Between rounds: restart the launcher's own helper processes if one died."""

    def close(self) -> None:
        """After the last worker is closed: free what the launcher holds."""


class Engine(Protocol):
    def run(self, shards: Sequence[Shard]) -> dict[int, str]:
        """Run ``shards``; return the ones given up with their reasons. ``JobFailed`` when the
        job cannot go on (committed shards stay; a rerun resumes)."""


class Backend(Protocol):
    """One job's engine, from right after ``spec.check()`` to the end of the job.

    Its class says what the engine accepts, read by ``check`` before anything starts."""

    calibrates: bool  # whether the driver's calibration decides the worker budgets
    remote_out: bool  # whether OUT may be object storage
    options: tuple[str, ...]  # the JobSpec fields only this engine reads (``ray_address``)

    def devices(self) -> list[str] | None:
        """The devices the engine decided (one per worker), or None to resolve them locally."""

    def settle(self) -> None:
        """Wait until the engine's own start-up no longer competes for the cores."""

    def engine(self, job: PreparedJob, on_event: Callable[[Any], None]) -> Engine:
        """The engine that runs ``job``'s pending shards."""

    def close(self) -> None:
        """Release everything ``engine`` did not (idempotent)."""


BACKENDS = {"local": "gristmill.engines.local_backend:LocalBackend",
            "ray": "gristmill.engines.ray_backend:RayBackend"}  # keyed by JobSpec.engine


def backend_class(name: str) -> type[Backend]:
    """The backend class of engine ``name`` (its module is imported only when used)."""
    module, attr = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def backend(spec: JobSpec) -> Backend:
    """Start the backend ``spec.engine`` names."""
    return backend_class(spec.engine)(spec)


def calibrates(spec: JobSpec) -> bool:
    """Whether ``spec``'s engine sizes its workers from this machine's calibration."""
    return backend_class(spec.engine).calibrates


def check(spec: JobSpec) -> None:
    """``SpecError`` (one line) for what ``spec``'s engine cannot do, before anything starts."""
    from ..errors import SpecError
    from ..store import is_remote

    if spec.engine not in BACKENDS:
        raise SpecError(f"--engine must be {' or '.join(map(repr, BACKENDS))}, "
                        f"got {spec.engine!r}")
    cls = backend_class(spec.engine)
    for name in BACKENDS:
        for option in backend_class(name).options if name != spec.engine else ():
            if getattr(spec, option) is not None and option not in cls.options:
                raise SpecError(f"--{option.replace('_', '-')} is only used with --engine {name}")
    if is_remote(spec.out) and not cls.remote_out:
        raise SpecError(f"-o {spec.out}: object storage output runs on --engine "
                        + " or ".join(n for n in BACKENDS if backend_class(n).remote_out)
                        + " (or mount the bucket)")
