"""Imported once, in the local engine's fork server (see ``forkserver``), never by the driver.

The worker code every job runs, imported last in the server: the job's model backend and its
framework come before it (``models.worker_modules``: torch and the torch backend for most jobs;
Caffe's protobuf reader, onnxruntime or ``transformers``' backend only for a job of that kind), so
every worker forked from the server shares all these pages. Then ``gc.freeze()``: a worker's
garbage collector would otherwise write to the header of every inherited object on its first full
collection, copying those pages into each worker (measured: 40 MB per worker).
"""

import gc

import numpy  # noqa: F401

import gristmill.engines.runner
import gristmill.tuning  # noqa: F401
from gristmill.loader.shm import quiet_tracker

quiet_tracker()  # in the server, so in every worker forked from it

gc.collect()
gc.freeze()
