"""Ragged arrays: arrays of arrays of different lengths, stored contiguously.

As in megastep (see the concepts seed): ``Ragged(vals, widths)`` holds a (V, ...) backing
array and (W,) subarray widths summing to V, with ``starts``, ``ends`` and ``inverse``
(the subarray each backing element belongs to). Integer indexing gives a subarray, slicing
gives a Ragged of consecutive subarrays.

:func:`Ragged` returns a :class:`RaggedNumpy` for numpy inputs and a :class:`RaggedJax`
(a pytree, so it passes through ``jit`` and ``vmap``) for jax arrays. The scenery's
per-line texels are laid out this way: ``texel_starts``/``texel_widths`` of one env are a
Ragged's ``starts``/``widths`` over its ``textures``.
"""
from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = ["Ragged", "RaggedNumpy", "RaggedJax"]


def _check(vals, widths, lib) -> None:
    if vals.ndim < 1:
        raise ValueError(f"vals: expected an array with a leading axis, got shape {vals.shape}")
    if widths.ndim != 1 or not lib.issubdtype(widths.dtype, lib.integer):
        raise ValueError(f"widths: expected a 1D integer array, got {widths.dtype} {widths.shape}")
    if isinstance(widths, jax.core.Tracer):
        return
    w = np.asarray(widths)
    if np.any(w < 0):
        raise ValueError("widths: expected non-negative widths")
    if w.sum() != vals.shape[0]:
        raise ValueError(f"widths: expected widths summing to len(vals) = {vals.shape[0]}, got {w.sum()}")


class _RaggedMixin:
    vals: object
    widths: object

    def __len__(self) -> int:
        return self.widths.shape[0]

    def _index(self, i):
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step != 1:
                raise ValueError("index: only contiguous slices (step 1) of a Ragged are supported")
            hi = max(hi, lo)
            s, e = int(self.starts[lo]) if lo < len(self) else int(self.vals.shape[0]), \
                int(self.ends[hi - 1]) if hi > lo else None
            e = s if e is None else e
            return type(self)(self.vals[s:e], self.widths[lo:hi])
        if isinstance(i, numbers.Integral):
            n = len(self)
            if not -n <= i < n:
                raise IndexError(f"index {i} out of range for a Ragged of {n} subarrays")
            i = i % n
            return self.vals[int(self.starts[i]):int(self.ends[i])]
        raise ValueError(f"index: expected an int or a slice, got {type(i).__name__}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({np.asarray(self.widths)})"


class RaggedNumpy(_RaggedMixin):
    """A Ragged backed by numpy arrays.

    Attributes:
        vals: (V, ...) backing values.
        widths: (W,) int widths, summing to V.
        starts, ends: (W,) start and end (exclusive) of each subarray in ``vals``.
        inverse: (V,) index of the subarray each element of ``vals`` belongs to.
    """

    def __init__(self, vals, widths):
        self.vals = np.asarray(vals)
        self.widths = np.asarray(widths)
        _check(self.vals, self.widths, np)
        self.ends = np.cumsum(self.widths)
        self.starts = self.ends - self.widths
        self.inverse = np.repeat(np.arange(len(self.widths)), self.widths)

    __getitem__ = _RaggedMixin._index

    def jaxify(self) -> "RaggedJax":
        return RaggedJax(jnp.asarray(self.vals), jnp.asarray(self.widths))

    def numpyify(self) -> "RaggedNumpy":
        return self


@struct.dataclass
class RaggedJax(_RaggedMixin):
    """A Ragged backed by jax arrays; a pytree of ``vals`` and ``widths``.

    ``starts``, ``ends`` and ``inverse`` are computed from them, so they also work under
    ``jit`` (the total length V is static: it is ``vals``' shape). Integer indexing and
    slicing produce arrays of data-dependent size, so they need concrete widths.
    """

    vals: jax.Array    # (V, ...)
    widths: jax.Array  # (W,) int

    def __post_init__(self):
        _check(self.vals, self.widths, jnp)

    def __repr__(self) -> str:  # the dataclass would print the backing values
        return _RaggedMixin.__repr__(self)

    @property
    def ends(self) -> jax.Array:
        return jnp.cumsum(self.widths)

    @property
    def starts(self) -> jax.Array:
        return self.ends - self.widths

    @property
    def inverse(self) -> jax.Array:
        return jnp.repeat(jnp.arange(self.widths.shape[0]), self.widths,
                          total_repeat_length=self.vals.shape[0])

    def __getitem__(self, i):
        if isinstance(self.widths, jax.core.Tracer):
            raise ValueError("index: indexing a Ragged needs concrete widths (not under jit); "
                             "use starts/ends/inverse with masks inside jitted code")
        return self._index(i)

    def numpyify(self) -> RaggedNumpy:
        return RaggedNumpy(np.asarray(self.vals), np.asarray(self.widths))

    def jaxify(self) -> "RaggedJax":
        return self


def Ragged(vals, widths):
    """A ragged array: a :class:`RaggedJax` for jax inputs, else a :class:`RaggedNumpy`.

    Args:
        vals: (V, ...) backing values.
        widths: (W,) non-negative integer widths summing to V.

    >>> r = Ragged(np.array([0., 1., 2., 3., 4., 5.]), np.array([3, 1, 2]))
    >>> r[0], r.inverse
    (array([0., 1., 2.]), array([0, 0, 0, 1, 2, 2]))
    """
    if isinstance(vals, jax.Array) or isinstance(widths, jax.Array):
        return RaggedJax(jnp.asarray(vals), jnp.asarray(widths))
    return RaggedNumpy(vals, widths)
