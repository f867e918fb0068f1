"""What each format accepts, read by ``JobSpec.check`` before anything starts: the output and
column names it cannot store, and whether OUT may be object storage.

Apart from the sinks (``base.Sink``) because their modules import numpy and h5py, and the check
runs on the way to starting the local engine's fork server, which must not wait for them
(``api.execute``). This module imports nothing but the errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from ..errors import SpecError

TAKEN = frozenset({"name"})  # a column every format stores beside the outputs
HDF5_RESERVED = frozenset({"names", "errors", "columns"})  # the view's own datasets and group
NPY_METADATA = "metadata"  # npy's folder of names and carried columns
# npy: each output is a folder of OUT, so not one of OUT's own names
NPY_RESERVED = frozenset({NPY_METADATA, "shards", "parquet", "errors", ".cache", "runs"})
# formats whose OUT may be object storage (not HDF5: the view's virtual datasets map shard files
# by path)
REMOTE = frozenset({"parquet", "npy"})


def check(fmt: str, outputs: Sequence[str], keep_columns: Sequence[str]) -> None:
    """``SpecError`` (one line) for output or column names format ``fmt`` cannot store."""
    _CHECKS[fmt](outputs, keep_columns)


def check_names(fmt: str, outputs: Sequence[str], keep_columns: Sequence[str],
                reserved: Iterable[str] = ()) -> None:
    """Outputs and carried columns share one namespace with ``name`` and the format's own
    ``reserved`` names: a clash is a ``SpecError`` naming it."""
    blocked = set(reserved) | TAKEN
    bad = [o for o in outputs if o in blocked]
    if bad:
        raise SpecError(f"--outputs {bad[0]}: the name is reserved by --format {fmt} "
                        f"(reserved: {', '.join(sorted(blocked))})")
    clash = set(keep_columns) & (blocked | set(outputs))
    if clash:
        raise SpecError(f"--keep-columns {sorted(clash)[0]} clashes with an output name or a "
                        f"name --format {fmt} reserves")


def _hdf5(outputs: Sequence[str], keep_columns: Sequence[str]) -> None:
    check_names("hdf5", outputs, keep_columns, HDF5_RESERVED)


def _parquet(outputs: Sequence[str], keep_columns: Sequence[str]) -> None:
    check_names("parquet", outputs, keep_columns)


def _npy(outputs: Sequence[str], keep_columns: Sequence[str]) -> None:
    # NAME/OUTPUT (several models) is a folder per model holding a folder per output
    nested = [o for o in outputs if any(p in ("", ".", "..") for p in o.split("/"))]
    if nested:
        raise SpecError(f"--format npy stores each output in a folder of its name; "
                        f"{nested[0]!r} is not a folder name (choose --format parquet or hdf5)")
    bad = [o for o in outputs if o.split("/")[0] in NPY_RESERVED]
    if bad:
        raise SpecError(f"--format npy stores each output in a folder of its name; "
                        f"{bad[0]!r} is reserved (choose --format parquet or hdf5)")
    check_names("npy", outputs, keep_columns)


_CHECKS: dict[str, Callable[[Sequence[str], Sequence[str]], None]] = {
    "hdf5": _hdf5, "parquet": _parquet, "npy": _npy}
