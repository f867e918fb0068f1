"""A job ready to run: what the driver decided before any worker starts, below every engine.

``job.prepare`` builds a ``PreparedJob`` (the job as it stands in OUT, ``outdir.JobState``, plus a
``WorkerPlan`` per worker); an engine (``engines/``) runs its pending shards. Neither the plans nor
the job change while it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .outdir import JobState
from .plan import Shard
from .sources import InputList
from .spec import JobSpec


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker runs with: its device, thread budget, loaders and ring geometry.

    Frozen: the engine derives each start's plan with ``dataclasses.replace`` (a fresh ring name,
    the job's turns folder) and never changes the prepared job's plans.
    """

    index: int
    device: str
    threads: int
    loaders: int
    slots: int
    batch_size: int
    ring_name: str = ""
    shared_weights: str | None = None  # a weights file the driver saved for workers to mmap
    turns: int = 0  # CPU workers outnumber the cores: this many run their model at once (turns.py)
    turns_dir: str = ""  # the turn files, made by the engine
    # the worker is a fresh fork running no thread of its own yet (the local engine's): its first
    # loaders may be forked too (``loader.pool.LoaderPool``'s ``fork_first``)
    fork_loaders: bool = False


@dataclass(frozen=True)
class PreparedJob:
    state: JobState
    workers: list[WorkerPlan]
    resumed: bool
    cache_dir: str = ""  # local folder for files the workers share

    @property
    def spec(self) -> JobSpec:
        return self.state.spec

    @property
    def inputs(self) -> InputList:
        return self.state.inputs

    @property
    def shards(self) -> tuple[Shard, ...]:
        return self.state.shards

    @property
    def pending(self) -> list[Shard]:
        return self.state.pending

    @property
    def inputs_path(self) -> str:
        """A local copy of OUT/inputs.npz that the workers load."""
        return self.state.inputs_path
