"""The Ray engine: the same job on a Ray cluster, one ``ShardRunner`` actor per GPU or CPU group.

Data flow::

    driver (this process)        plans, hands out ShardTasks (ids and ranges, never pixels),
    │                            collects receipts, builds features.h5 at the end (driver.py)
    ├── actor 0 on node A        RunnerActor: model once, own loaders + slot ring on node A,
    │                            reads OUT/inputs.npz, commits shards straight into OUT
    └── actor 1 on node B ...

Storage: every node must see OUT at the same path (a shared filesystem: NFS, Lustre, a FUSE mount
of a bucket). Actors commit shards with the ledger's temp -> fsync -> rename -> marker protocol, so
a shard computed twice (a retry after a lost node) is committed once. An ``s3://`` OUT (shards
uploaded whole, then their marker: ``store.py``) runs on the local engine only; for a Ray job,
mount the bucket.

Scheduling and faults are ``supervisor.Supervisor``'s, the same loop as the local engine's; this
module is the Ray worker handle (``RayActor``: one long ``poll`` call outstanding per actor) and
its launcher. An actor whose calls fail with ``RayActorError`` (its process or node died; Ray
notices a lost node after its health checks miss, seconds when tuned) or whose pump raised is
gone; the supervisor kills it and starts a new actor under the same index (Ray places it
wherever resources exist; on a lost node it waits until one joins). If no actor is ready for
``SETUP_TIMEOUT`` seconds (every node lost, or no replacement can be placed) the job fails with
``JobFailed``; committed shards stay and a rerun resumes from the markers.

Start-up: a fresh Ray worker process imports torch and the worker code before it can load a model
(seconds). ``Actors.prestart`` starts the actors as soon as the job's spec is checked
(``api.execute``), so those imports run while the driver prepares the job; the engine then gives
each actor the prepared job in ``setup``. CPU actors map the weights file the driver saved
(``OUT/.cache``, on the shared filesystem) instead of building the model themselves.

Shutdown (the supervisor's order): ``stop`` asks an actor to ``teardown`` (stop the pump, stop its
loaders, unlink its ring), ``close`` then ``ray.kill``s it, live or pending; finally the launcher
ends the Ray connection this job made (a local Ray it started stops with it). Actors are planned
once (``Actors``: the cluster's shape and each index's plan) and the job's devices come from that
plan (``ray_backend.RayBackend.devices``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..plan import Shard
from ..prepared import WorkerPlan
from ..spec import JobSpec
from ..tuning import ALLOCATOR_ENV
from . import ray_worker
from .messages import ShardTask, WorkerCrashed
from .supervisor import Supervisor

log = logging.getLogger(__name__)

POLL_CALL = 1.0  # how long an actor's poll waits for a message before returning empty
SETUP_TIMEOUT = 300.0


class Actors:
    """Connects to the cluster, plans the actors' shape and starts ``RunnerActor``s of it.

    ``prestart()`` starts the job's first actors ahead of ``RayEngine.run``, which ``take``s them;
    ``close()`` kills the ones never taken and ends the Ray connection this job made (a local Ray
    it started stops with it); both idempotent, so a job that fails while it is prepared leaves
    nothing behind.
    """

    def __init__(self, spec: JobSpec) -> None:
        self.spare: list[Any] = []
        self.connected = ray_worker.connect(spec.ray_address)  # without Ray: a SpecError
        import ray

        try:
            self.shape = ray_worker.plan_actors(spec, ray_worker.alive_nodes())
        except BaseException:
            self.close()
            raise
        self.actor_class = ray.remote(ray_worker.RunnerActor)

    def prestart(self) -> Actors:
        self.spare = [self.new() for _ in range(self.shape.count)]
        return self

    def new(self) -> Any:
        return self.actor_class.options(
            num_cpus=self.shape.num_cpus, num_gpus=self.shape.num_gpus, max_restarts=0,
            max_concurrency=4,  # submit and poll run beside the pump thread
            scheduling_strategy="SPREAD", name=None,
            runtime_env={"env_vars": ALLOCATOR_ENV},  # merged with the job's own runtime_env
        ).remote()

    def take(self) -> Any:
        return self.spare.pop(0) if self.spare else self.new()

    def close(self) -> None:
        import ray

        for handle in self.spare:
            with contextlib.suppress(Exception):
                ray.kill(handle, no_restart=True)
        self.spare = []
        if self.connected:
            self.connected = False
            ray_worker.disconnect()


def prestart(spec: JobSpec) -> Actors:
    """Connect and start the job's actors now (their imports overlap the job's preparation)."""
    return Actors(spec).prestart()


class RayActor:
    """One ``RunnerActor`` and its outstanding call (a ``WorkerHandle``): ``setup`` until it
    answers, then ``poll``."""

    def __init__(self, index: int, actor: Any, call: Any) -> None:
        self.index, self.actor, self.call = index, actor, call
        self.ready = False
        self.pid = 0
        self.lost: str | None = None
        self.stopping: Any = None

    def send(self, task: ShardTask) -> None:
        with contextlib.suppress(Exception):  # errors surface through its poll
            self.actor.submit.remote(task)

    def receive(self) -> list[Any]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        if self.lost is not None or not ray.wait([self.call], timeout=0)[0]:
            return []
        try:
            value = ray.get(self.call)
        except RayActorError as exc:
            self.lost = f"Ray worker lost ({type(exc).__name__})"
            return []
        except RayTaskError as exc:
            if not self.ready:  # the model could not load: every replacement would fail too
                return [WorkerCrashed(self.index, "setup", f"could not load the model: "
                                                           f"{exc.cause!r}")]
            self.lost = f"worker failed: {exc.cause!r}"
            return []
        self.call = self.actor.poll.remote(POLL_CALL)
        if self.ready:
            return list(value)
        self.ready, self.pid = True, value.pid
        return [value]

    def exit_reason(self) -> str | None:
        return self.lost

    def kill(self) -> None:
        import ray

        with contextlib.suppress(Exception):
            ray.kill(self.actor, no_restart=True)

    def stop(self) -> None:
        if self.ready and self.lost is None:
            with contextlib.suppress(Exception):
                self.stopping = self.actor.teardown.remote()

    def join(self, timeout: float) -> bool:
        import ray

        if self.stopping is None:
            return True
        with contextlib.suppress(Exception):
            return bool(ray.wait([self.stopping], timeout=timeout)[0])
        return True

    def close(self) -> None:
        self.kill()


class RayLauncher:
    """Starts ``RayActor``s of the planned shape (a ``Launcher``)."""

    def __init__(self, spec: JobSpec, inputs_path: str, shared_weights: str | None,
                 pool: Actors) -> None:
        self.spec, self.inputs_path, self.pool = spec, inputs_path, pool
        self.count = pool.shape.count
        self.plans = [dataclasses.replace(pool.shape.plan(i, spec), shared_weights=shared_weights)
                      for i in range(self.count)]  # planned once; a replacement reuses its plan

    @property
    def setup_timeout(self) -> float:
        return SETUP_TIMEOUT  # read at each check: a test shortens it mid-run

    def start(self, index: int) -> RayActor:
        actor = self.pool.take()
        return RayActor(index, actor, actor.setup.remote(self.spec, self.inputs_path,
                                                         self.plans[index]))

    def wait(self, handles: Sequence[RayActor], timeout: float) -> list[RayActor]:
        import ray

        calls = {h.call: h for h in handles if h.lost is None}
        if not calls:
            time.sleep(timeout)
            return []
        done, _ = ray.wait(list(calls), num_returns=1, timeout=timeout)
        if done:  # collect every call that is ready, not only the first
            done, _ = ray.wait(list(calls), num_returns=len(calls), timeout=0)
        return [calls[ref] for ref in done]

    def tend(self) -> None:
        """Nothing: Ray supervises its own processes."""

    def close(self) -> None:
        self.pool.close()


class RayEngine:
    """Runs a prepared job's pending shards on Ray actors (an ``Engine``; see module docstring).

    Of ``workers`` (the local plan) only the shared weights file is used: the actors are planned
    from the cluster's resources. ``actors`` are the ones ``prestart`` started for this job, if
    any.
    """

    def __init__(self, spec: JobSpec, inputs_path: str, workers: list[WorkerPlan],
                 on_event: Callable[[Any], None], actors: Actors | None = None) -> None:
        self.spec, self.inputs_path, self.on_event = spec, inputs_path, on_event
        self.shared_weights = workers[0].shared_weights if workers else None
        self.pool = actors

    def run(self, shards: Sequence[Shard]) -> dict[int, str]:
        """Run ``shards``; return the ones given up, with their reasons."""
        pool = self.pool = self.pool or Actors(self.spec)
        launcher = RayLauncher(self.spec, self.inputs_path, self.shared_weights, pool)
        return Supervisor(launcher, max_attempts=self.spec.max_attempts,
                          stall_timeout=self.spec.stall_timeout,
                          on_event=self.on_event).run(shards)
