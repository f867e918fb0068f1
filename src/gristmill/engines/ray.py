"""The Ray engine: the same job on a Ray cluster, one ``ShardRunner`` actor per GPU or CPU group.

Data flow::

    driver (this process)        plans, hands out ShardTasks (ids and ranges, never pixels),
    │                            collects receipts, builds features.h5 at the end (api.py)
    ├── actor 0 on node A        RunnerActor: model once, own loaders + slot ring on node A,
    │                            reads OUT/inputs.npz, commits shards straight into OUT
    └── actor 1 on node B ...

Storage: every node must see OUT at the same path (a shared filesystem: NFS, Lustre, a FUSE mount
of a bucket). Actors commit shards with the ledger's temp -> fsync -> rename -> marker protocol, so
a shard computed twice (a retry after a lost node) is committed once. An ``s3://`` OUT (shards
uploaded whole, then their marker: ``store.py``) runs on the local engine only; for a Ray job,
mount the bucket.

Scheduling: the driver keeps at most ``PREFETCH`` shards in flight per ready actor (so a slow actor
never holds work an idle one could take) and one long ``poll`` call outstanding per actor; it
wakes at least every ``POLL`` seconds.

Faults: an actor whose calls fail with ``RayActorError`` (its process or node died; Ray notices a
lost node after its health checks miss, seconds when tuned), whose pump raised, or that sends
nothing for ``stall_timeout`` seconds while holding shards, is killed and replaced by a new actor
(Ray places it wherever resources exist; on a lost node it waits until one joins). Its shards go
back to the front of the queue and the one it was computing is charged an attempt; a shard given
up after ``max_attempts`` is reported failed. If no actor is ready for ``SETUP_TIMEOUT`` seconds
(every node lost, or no replacement can be placed), or actors died more than the bound, the job
fails with ``JobFailed``; committed shards stay and a rerun resumes from the markers, as a driver
restart does.

Start-up: a fresh Ray worker process imports torch and the worker code before it can load a model
(seconds). ``Actors.prestart`` starts the actors as soon as the job's spec is checked
(``api.execute``), so those imports run while the driver prepares the job; the engine then gives
each actor the prepared job in ``setup``. CPU actors map the weights file the driver saved
(``OUT/.cache``, on the shared filesystem) instead of building the model themselves.

Shutdown order (written once, here): ask every actor to ``teardown`` (stop the pump, stop its
loaders, unlink its ring), wait up to ``JOIN_SECONDS``, then ``ray.kill`` every actor, live or
pending; finally end the Ray connection this job made (a local Ray it started stops with
it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import JobFailed
from ..spec import JobSpec
from ..tuning import ALLOCATOR_ENV
from . import ray_worker
from .messages import Receipt, ShardFailed, ShardTask
from .runner import WorkerPlan
from .shards import ShardQueue

log = logging.getLogger(__name__)

PREFETCH = 2
POLL = 0.25
POLL_CALL = 1.0  # how long an actor's poll waits for a message before returning empty
JOIN_SECONDS = 10.0
SETUP_TIMEOUT = 300.0


@dataclass
class _Actor:
    plan: WorkerPlan
    handle: Any
    call: Any  # the outstanding ObjectRef: setup() until ready, then poll()
    inflight: list[ShardTask] = field(default_factory=list)
    last_seen: float = field(default_factory=time.monotonic)
    ready: bool = False


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


class RayEngine:
    """Runs a prepared job's pending shards on Ray actors (see module docstring).

    Same contract as ``LocalEngine``: ``run(shards)`` returns the shards given up, with reasons,
    and raises ``JobFailed`` when the job cannot go on. Of ``workers`` (the local plan) only the
    shared weights file is used: the actors are planned from the cluster's resources. ``actors``
    are the ones ``prestart`` started for this job, if any.
    """

    def __init__(self, spec: JobSpec, inputs_path: str, workers: list[WorkerPlan],
                 on_event: Callable[[Any], None], actors: Actors | None = None) -> None:
        self.spec, self.inputs_path, self.on_event = spec, inputs_path, on_event
        self.shared_weights = workers[0].shared_weights if workers else None
        self.pool = actors
        self.actors: list[_Actor] = []
        self.queue = ShardQueue((), spec.max_attempts, on_event)
        self.deaths = 0
        self.next_index = 0
        self.last_ready = time.monotonic()

    def run(self, shards: list[Any]) -> dict[int, str]:
        """Run ``shards``; return the ones given up, with their reasons."""
        import ray

        pool = self.pool = self.pool or Actors(self.spec)
        self.shape = pool.shape
        self.queue = ShardQueue(shards, self.spec.max_attempts, self.on_event)
        try:
            self.actors = [self._start() for _ in range(self.shape.count)]
            self.last_ready = time.monotonic()
            while self.queue or any(a.inflight for a in self.actors):
                self._assign()
                calls = {a.call: a for a in self.actors}
                done, _ = ray.wait(list(calls), num_returns=1, timeout=POLL)
                if done:  # collect every call that is ready, not only the first
                    done, _ = ray.wait(list(calls), num_returns=len(calls), timeout=0)
                for ref in done:
                    self._collect(calls[ref], ref)
                self._supervise()
        finally:
            self._shutdown()
            pool.close()
        return self.queue.failed

    # -- actors --------------------------------------------------------------------------------
    def _start(self) -> _Actor:
        assert self.pool is not None
        plan = dataclasses.replace(self.shape.plan(self.next_index, self.spec),
                                   shared_weights=self.shared_weights)
        self.next_index += 1
        handle = self.pool.take()
        return _Actor(plan, handle, handle.setup.remote(self.spec, self.inputs_path, plan))

    def _assign(self) -> None:
        for actor in self.actors:
            while actor.ready and self.queue and len(actor.inflight) < PREFETCH:
                task = self.queue.pop()
                actor.handle.submit.remote(task)  # errors surface through its poll
                actor.inflight.append(task)
                actor.last_seen = time.monotonic()

    def _collect(self, actor: _Actor, ref: Any) -> None:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        try:
            value = ray.get(ref)
        except RayActorError as exc:
            self._lost(actor, f"Ray worker lost ({type(exc).__name__})")
            return
        except RayTaskError as exc:
            if not actor.ready:  # the model could not load: every replacement would fail too
                raise JobFailed(f"worker {actor.plan.index} could not load the model: "
                                f"{exc.cause!r}") from None
            self._lost(actor, f"worker failed: {exc.cause!r}")
            return
        if value:  # an empty poll proves only that the process lives, not that it progresses
            actor.last_seen = time.monotonic()
        if not actor.ready:
            actor.ready = True
            self.on_event(value)
        else:
            for message in value:
                self._handle(actor, message)
        actor.call = actor.handle.poll.remote(POLL_CALL)

    def _handle(self, actor: _Actor, message: Any) -> None:
        if isinstance(message, Receipt | ShardFailed):
            task = next((t for t in actor.inflight if t.shard.id == message.shard), None)
            if task is not None:
                actor.inflight.remove(task)
                if isinstance(message, ShardFailed):
                    self.queue.retry(task, message.reason)
        self.on_event(message)


    def _lost(self, actor: _Actor, reason: str) -> None:
        """Kill ``actor``, requeue its shards, and start a replacement in its place."""
        import ray

        log.warning("worker %d: %s; its %d shard(s) go back to the queue", actor.plan.index,
                    reason, len(actor.inflight))
        self.deaths += 1
        with contextlib.suppress(Exception):
            ray.kill(actor.handle, no_restart=True)
        self.queue.give_back(actor.inflight, reason)
        actor.inflight.clear()
        if self.deaths > 10 * self.shape.count + self.spec.max_attempts:
            raise JobFailed(f"Ray workers died {self.deaths} times (last: {reason})")
        self.actors[self.actors.index(actor)] = self._start()

    def _supervise(self) -> None:
        now = time.monotonic()
        if any(a.ready for a in self.actors):
            self.last_ready = now
        elif now - self.last_ready > SETUP_TIMEOUT:
            raise JobFailed(f"no Ray worker was running for {SETUP_TIMEOUT:.0f} s (nodes lost "
                            "or no resources to place one); rerun to resume")
        for actor in list(self.actors):
            if actor.inflight and now - actor.last_seen > self.spec.stall_timeout:
                self._lost(actor, f"no progress for {self.spec.stall_timeout:.0f} s")

    def _shutdown(self) -> None:
        import ray

        stops = []
        for actor in self.actors:
            if actor.ready:
                with contextlib.suppress(Exception):
                    stops.append(actor.handle.teardown.remote())
        with contextlib.suppress(Exception):
            ray.wait(stops, num_returns=len(stops), timeout=JOIN_SECONDS)
        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor.handle, no_restart=True)
        self.actors = []

