"""Imported once, in the local engine's fork server (see ``forkserver``), never by the driver.

Everything a worker imports before its first batch, so every worker forked from the server shares
these pages. Then ``gc.freeze()``: a worker's garbage collector would otherwise write to the header
of every inherited object on its first full collection, copying those pages into each worker
(measured: 40 MB per worker).
"""

import gc

import numpy  # noqa: F401
import torch  # noqa: F401

import gristmill.caffe.net
import gristmill.engines.runner
import gristmill.models.torch
import gristmill.tuning  # noqa: F401
from gristmill.loader.shm import quiet_tracker

quiet_tracker()  # in the server, so in every worker forked from it

gc.collect()
gc.freeze()
