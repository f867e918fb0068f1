"""pycaffe's ``Blob``: a named array with ``data`` / ``diff`` / ``reshape`` / ``shape``.

Contract: ``data`` and ``diff`` are float32 numpy arrays of ``shape``, allocated (zeros) on first
use and again after ``reshape`` changes the shape, as Caffe leaves reshaped contents undefined.
``Net.forward`` stores each blob as the tensor it computed; ``data`` turns it into a C-contiguous
numpy array on first read (a view when the tensor is already laid out so), so blobs nobody reads
cost no conversion.
Used by :class:`gristmill.caffe.Net` (``net.blobs``, ``net.params``) and handed to Python layers as
their ``bottom`` / ``top`` lists.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Blob:
    """A named array with pycaffe's ``data`` / ``diff`` / ``reshape`` / ``shape`` surface."""

    def __init__(self, shape: tuple[int, ...], data: np.ndarray | None = None) -> None:
        self._shape = tuple(int(s) for s in shape)
        self._data = data
        self._diff: np.ndarray | None = None
        self._tensor: Any = None  # a torch.Tensor from forward, not yet read as numpy

    @property
    def data(self) -> np.ndarray:
        if self._tensor is not None:
            array = self._tensor.detach().cpu().numpy()
            # not np.ascontiguousarray: it turns a 0-d blob (Reduction over every axis) into 1-d
            self._data = array if array.flags.c_contiguous else array.copy(order="C")
            self._tensor = None
        if self._data is None or self._data.shape != self._shape:
            self._data = np.zeros(self._shape, dtype=np.float32)
        return self._data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self.data[...] = value

    @property
    def diff(self) -> np.ndarray:
        if self._diff is None or self._diff.shape != self._shape:
            self._diff = np.zeros(self._shape, dtype=np.float32)
        return self._diff

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def count(self) -> int:
        return int(np.prod(self._shape))

    def _dim(self, i: int) -> int:
        return self._shape[i] if len(self._shape) > i else 1

    num = property(lambda self: self._dim(0))
    channels = property(lambda self: self._dim(1))
    height = property(lambda self: self._dim(2))
    width = property(lambda self: self._dim(3))

    def reshape(self, *shape: int) -> None:
        """New shape; the data is reallocated (zeros), as Caffe leaves it undefined."""
        shape = tuple(int(s) for s in shape)
        if shape != self._shape:
            self._tensor = None
        self._shape = shape

    def _set(self, value: np.ndarray) -> None:
        self._shape, self._data, self._tensor = tuple(value.shape), value, None

    def _release(self) -> None:
        """Forget the content (forward is about to replace it), so its memory can be reused."""
        self._data = self._tensor = None

    def _set_tensor(self, value: Any) -> None:
        """The blob's new content, as a tensor converted on the first ``data`` read."""
        self._shape, self._data, self._tensor = tuple(value.shape), None, value
