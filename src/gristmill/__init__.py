"""gristmill: run deep-learning models over millions of inputs with every core and GPU.

Public API (imports are lazy: ``import gristmill`` loads no framework)::

    gristmill.run(sources, out, model=..., outputs=..., **options) -> Report
    gristmill.open(out) -> Result            # names, outputs, errors of OUT/features.h5
    gristmill.JobSpec, ModelSpec, Preprocess # the typed job description
    gristmill.SpecError, JobFailed           # bad job (nothing ran) / job did not complete
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import GristmillError, JobFailed, SpecError
from .spec import JobSpec, ModelSpec, Preprocess

if TYPE_CHECKING:
    from .api import open, run

__all__ = ["GristmillError", "JobFailed", "JobSpec", "ModelSpec", "Preprocess", "SpecError",
           "open", "run"]


def __getattr__(name: str) -> Any:
    if name in ("run", "open"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'gristmill' has no attribute {name!r}")
