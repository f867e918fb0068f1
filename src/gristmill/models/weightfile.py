"""safetensors weights: checked without unpickling anything, and mapped rather than read.

``map_tensors(path)`` maps the file copy-on-write (``MAP_PRIVATE``) and views each tensor in place,
so every worker process on a machine that maps the same file shares its pages in the page cache
until one writes to them (inference never does). The ``safetensors`` package's own ``load_file``
copies each tensor into private memory when it is first read (measured: +195 MB private per
process for a 200 MB file), which is why the format's header is read here directly: 8 bytes of
little-endian header length, a JSON header ``{name: {dtype, shape, data_offsets}}``, then the data.

``require_safetensors(path)`` is the one-line refusal of a pickle (a ``torch.save`` file or a
``pytorch_model.bin``) where safetensors are required: a pickle can run code when loaded, so it is
recognised by its first bytes and never handed to an unpickler.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from typing import Any

from ..errors import SpecError

SUFFIX = ".safetensors"
_MAX_HEADER = 100 * 2**20

_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
           "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
           "BOOL": "bool"}


def is_pickle(head: bytes) -> bool:
    """A ``torch.save`` zip archive or a raw pickle (protocol 2 or later), by its first bytes."""
    return head.startswith(b"PK\x03\x04") or (len(head) > 1 and head[0] == 0x80
                                               and 2 <= head[1] <= 5)


def read_header(path: str) -> tuple[dict[str, Any], int]:
    """The JSON header and where the data starts; SpecError (one line) for anything else."""
    if not os.path.isfile(path):
        raise SpecError(f"weights file {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
        if is_pickle(head):
            raise SpecError(f"weights file {path} is a pickle, not safetensors: it is refused "
                            "unread (convert it with safetensors.torch.save_file)")
        if len(head) < 8:
            raise SpecError(f"weights file {path} is not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", head)
        if size > _MAX_HEADER or 8 + size > os.path.getsize(path):
            raise SpecError(f"weights file {path} is not a safetensors file (bad header size)")
        try:
            header = json.loads(f.read(size))
        except ValueError:
            raise SpecError(f"weights file {path} is not a safetensors file "
                            "(unreadable header)") from None
    if not isinstance(header, dict):
        raise SpecError(f"weights file {path} is not a safetensors file (header is not a map)")
    header.pop("__metadata__", None)
    return header, 8 + size


def require_safetensors(path: str) -> None:
    """Check ``path`` is a safetensors file (its header only); one-line SpecError if not."""
    read_header(path)


def map_tensors(path: str) -> dict[str, Any]:
    """name -> a torch tensor viewing the mapped file (shared pages, see module docstring)."""
    import torch

    header, start = read_header(path)
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    tensors = {}
    for name, entry in header.items():
        dtype = getattr(torch, _DTYPES.get(entry.get("dtype", ""), ""), None)
        if not isinstance(dtype, torch.dtype):
            raise SpecError(f"weights file {path}: tensor {name} has unsupported dtype "
                            f"{entry.get('dtype')}")
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        count = (end - begin) // dtype.itemsize
        if count == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        flat = torch.frombuffer(mapped, dtype=dtype, count=count, offset=start + begin)
        tensors[name] = flat.view(shape)
    return tensors
