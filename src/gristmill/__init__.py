"""gristmill: run deep-learning models over millions of inputs with every core and GPU.

Public API (imports are lazy: ``import gristmill`` loads no framework)::

    gristmill.run(sources, out, model=..., outputs=..., **options) -> Report
    gristmill.open(out) -> Result            # names, outputs, errors, columns of OUT (any format)
    gristmill.Loader(sources, batch_size=...) # training batches: augmented, DDP-sharded, resumable
    gristmill.Augment(size=(224, 224))        # random resized crop + flip, in the loader processes
    gristmill.JobSpec, ModelSpec, Preprocess # the typed job description
    gristmill.SpecError, JobFailed           # bad job (nothing ran) / job did not complete
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import GristmillError, JobFailed, SpecError
from .spec import JobSpec, ModelSpec, Preprocess

if TYPE_CHECKING:
    from .api import open, run
    from .loader.augment import Augment
    from .loader.training import Loader

__all__ = ["Augment", "GristmillError", "JobFailed", "JobSpec", "Loader", "ModelSpec",
           "Preprocess", "SpecError", "open", "run"]


def __getattr__(name: str) -> Any:
    if name in ("run", "open"):
        from . import api

        return getattr(api, name)
    if name == "Loader":
        from .loader.training import Loader

        return Loader
    if name == "Augment":
        from .loader.augment import Augment

        return Augment
    raise AttributeError(f"module 'gristmill' has no attribute {name!r}")
