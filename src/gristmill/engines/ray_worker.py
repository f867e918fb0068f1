"""The Ray side of the Ray engine: connecting, planning actors from the cluster, the actor body.

Nothing here imports Ray at module level, so ``gristmill`` imports without the ``ray`` extra and
``--engine ray`` without it fails at validation (``SpecError`` naming ``pip install
'gristmill[ray]'``).

Placement policy (``plan_actors``, a pure function of the cluster's node resources):

- GPU (``--device cuda``, or ``auto`` on a cluster that has GPUs): one actor per GPU,
  ``num_gpus=1``; Ray sets ``CUDA_VISIBLE_DEVICES`` so the actor's device is ``cuda:0``. Loaders
  default to the node's CPUs per GPU minus one, as the local engine does per machine.
- CPU: one actor per CPU group, ``num_cpus`` = its thread budget; the budget defaults to the
  smallest node's CPU count (one actor per node), so ``--threads`` splits nodes into groups.

Actor body (``RunnerActor``): a ``ShardRunner`` (model once, its own loader processes and
shared-memory slot ring on the actor's node) driven by one pump thread. ``submit`` and ``poll``
only touch thread-safe queues, so the actor runs with a few concurrent method threads and the
driver can hand it a shard while it computes another. ``poll`` is a long poll: it returns as
soon as a message is ready (or after ``timeout``), with ``Progress`` counts merged.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import queue
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import SpecError
from ..prepared import WorkerPlan
from ..sources import InputList
from ..spec import JobSpec
from .messages import Progress, ShardTask, WorkerReady
from .runner import ShardRunner

log = logging.getLogger(__name__)

INSTALL = "pip install 'gristmill[ray]'"


@dataclass(frozen=True)
class ActorShape:
    """How many actors to start and what each reserves and runs with."""

    count: int
    num_cpus: float
    num_gpus: float
    device: str
    threads: int
    loaders: int

    def plan(self, index: int, spec: JobSpec) -> WorkerPlan:
        slots = spec.slots or self.loaders + 2
        return WorkerPlan(index, self.device, self.threads, self.loaders, slots, spec.batch_size)


def plan_actors(spec: JobSpec, nodes: Sequence[Mapping[str, float]]) -> ActorShape:
    """The actors for ``spec`` on alive nodes with these resources; SpecError if none fit."""
    device = spec.device.strip().lower()
    if device not in ("auto", "cpu", "cuda"):
        raise SpecError(f"--device {spec.device}: with --engine ray use auto, cpu or cuda "
                        "(Ray assigns the GPUs)")
    gpus = sum(n.get("GPU", 0.0) for n in nodes)
    if device == "cuda" and gpus < 1:
        raise SpecError("--device cuda: the Ray cluster has no GPU")
    if device == "cuda" or (device == "auto" and gpus >= 1):
        if spec.workers > gpus:
            raise SpecError(f"--workers {spec.workers} is more than the {int(gpus)} GPU(s) of "
                            "the Ray cluster")
        per_gpu = min(int(n.get("CPU", 0.0) // n["GPU"]) for n in nodes if n.get("GPU", 0) >= 1)
        loaders = spec.loaders or max(1, per_gpu - 1)
        threads = spec.threads or 1
        return ActorShape(spec.workers or int(gpus), float(min(per_gpu, threads + loaders)), 1.0,
                          "cuda:0", threads, loaders)
    cpus = [int(n.get("CPU", 0.0)) for n in nodes if n.get("CPU", 0.0) >= 1]
    if not cpus:
        raise SpecError("the Ray cluster has no node with a CPU to run workers on")
    threads = spec.threads or min(cpus)
    groups = sum(c // threads for c in cpus)
    if groups == 0 or spec.workers > groups:
        raise SpecError(f"--workers {spec.workers or 1} x --threads {threads} does not fit the "
                        f"Ray cluster's nodes (CPUs per node: {sorted(cpus)})")
    return ActorShape(spec.workers or groups, float(threads), 0.0, "cpu", threads,
                      spec.loaders or threads)


def connect(address: str | None) -> bool:
    """Attach to the Ray cluster at ``address`` (None: start or attach a local Ray).

    Reuses an existing connection of this process (the caller's ``ray.init`` wins) and then
    returns False; True when this call connected, and the caller should ``disconnect`` when its job
    ends. Raises SpecError when Ray is not installed or the cluster cannot be reached.
    """
    if importlib.util.find_spec("ray") is None:
        raise SpecError(f"--engine ray needs Ray, which is not installed: {INSTALL}")
    import ray

    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"logging_level": logging.WARNING}
    if address is None:
        options["include_dashboard"] = False  # a local Ray for this job only
    try:
        ray.init(address=address, **options)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: all mean "unreachable"
        raise SpecError(f"--ray-address {address or '(local)'}: cannot connect to Ray: "
                        f"{exc}") from None
    return True


def disconnect() -> None:
    """End this process's Ray connection: a local Ray that ``connect`` started stops with it, a
    cluster named by address keeps running. Done when the job ends rather than at interpreter
    exit, where Ray's own shutdown took a second longer (measured)."""
    import ray

    ray.shutdown()


def alive_nodes() -> list[dict[str, float]]:
    """The resources of every alive node of the connected cluster."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


class RunnerActor:
    """One gristmill worker as a Ray actor (see module docstring). Methods return small values.

    The constructor only imports what a worker runs (torch, the runner, the model backends): the
    engine starts actors before the job is prepared, so those seconds overlap the driver's own
    preparation; ``setup`` then gets the prepared job.
    """

    def __init__(self) -> None:
        # the job's model is not known yet: torch and its backend, which most jobs run; the
        # preload module last, since it freezes what is imported by then
        for name in ("gristmill.models.torch", "gristmill.engines.preload"):
            importlib.import_module(name)

        self.plan: WorkerPlan | None = None
        self.runner: ShardRunner | None = None
        self.inbox: queue.Queue[ShardTask] = queue.Queue()
        self.outbox: queue.Queue[Any] = queue.Queue()
        self.stopping = threading.Event()
        self.error: str | None = None
        self.setup_error: BaseException | None = None
        self.pump: threading.Thread | None = None

    def setup(self, spec: JobSpec, inputs_path: str, plan: WorkerPlan) -> WorkerReady:
        """Load the model, start loaders and the pump; raises what the model load raised."""
        start = time.perf_counter()
        self.plan = plan
        self.runner = ShardRunner(spec, InputList.load(inputs_path), plan)
        # The pump thread sets the runner up: loader processes die with the thread that started
        # them (PR_SET_PDEATHSIG), so they must belong to the thread that lives until teardown,
        # not to one of Ray's method threads.
        started = threading.Event()
        self.pump = threading.Thread(target=self._pump, args=(started,), name="gristmill-pump",
                                     daemon=True)
        self.pump.start()
        started.wait()
        if self.setup_error is not None:
            raise self.setup_error
        return WorkerReady(plan.index, os.getpid(), plan.device, plan.threads, plan.loaders,
                           time.perf_counter() - start)

    def submit(self, task: ShardTask) -> None:
        self.inbox.put(task)

    def poll(self, timeout: float) -> list[Any]:
        """Messages since the last poll, waiting up to ``timeout`` for the first one.

        Raises RuntimeError once the pump has failed, so the driver replaces this actor.
        """
        messages = []
        with contextlib.suppress(queue.Empty):
            messages.append(self.outbox.get(timeout=timeout))
            while True:
                messages.append(self.outbox.get_nowait())
        if self.error is not None and not messages:
            raise RuntimeError(f"worker {self._index()} failed: {self.error}")
        items = sum(m.items for m in messages if isinstance(m, Progress))
        rest = [m for m in messages if not isinstance(m, Progress)]
        return ([Progress(items)] if items else []) + rest

    def teardown(self) -> None:
        self.stopping.set()
        if self.pump is not None:
            self.pump.join(timeout=10)
        if self.runner is not None:
            self.runner.teardown()
            self.runner = None

    def _index(self) -> int:
        return self.plan.index if self.plan is not None else -1

    def _pump(self, started: threading.Event) -> None:
        runner = self.runner
        assert runner is not None
        try:
            runner.setup()
        except BaseException as exc:
            self.setup_error = exc
            return
        finally:
            started.set()
        try:
            while not self.stopping.is_set():
                with contextlib.suppress(queue.Empty):
                    while True:
                        runner.submit(self.inbox.get_nowait())
                if runner.inflight:
                    for message in runner.step(timeout=0.1):
                        self.outbox.put(message)
                else:
                    with contextlib.suppress(queue.Empty):
                        runner.submit(self.inbox.get(timeout=0.2))
        except Exception:
            self.error = traceback.format_exc(limit=5)
            log.error("worker %d failed:\n%s", self._index(), self.error)
