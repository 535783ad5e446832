"""Parameter initialisation that is safe to ``vmap`` on the CPU.

Flax's (and JAX's) orthogonal initialiser takes the QR decomposition of a Gaussian matrix
with LAPACK. Under ``jax.vmap`` (several seeds trained at once) that becomes jaxlib's
batched LAPACK ``geqrf``/``orgqr``, which can deadlock XLA's CPU thread pool on a 2-core
machine. Two remedies, used together by :mod:`agents.ppo` and :mod:`agents.networks`:

- :func:`one_at_a_time` wraps a function so that under ``vmap`` (at any depth) it runs
  once per member in a ``lax.map`` instead of being batched: parameter initialisation of
  any network, with any initialiser, stays unbatched.
- :func:`orthogonal` is a drop-in for ``flax.linen.initializers.orthogonal`` whose QR
  (:func:`thin_q`) is itself one at a time, so the initialiser alone is safe under
  ``vmap`` too. For the same key it returns flax's matrix. (A Householder QR in
  ``jax.numpy`` would avoid LAPACK altogether, but its two loops per matrix made a small
  trainer's ``init`` take ~5.9 s to compile on one core, against ~3.9 s with LAPACK.)
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["thin_q", "orthogonal", "one_at_a_time"]


def _q_of(a: jax.Array) -> jax.Array:
    # LAPACK's QR, then R's diagonal made positive: the unique thin Q, flax's numbers
    q, r = jnp.linalg.qr(a)
    return q * jnp.where(jnp.diagonal(r) >= 0, 1.0, -1.0).astype(a.dtype)[None, :]


def thin_q(a: jax.Array) -> jax.Array:
    """The Q of a thin QR decomposition ``a = Q R`` with R's diagonal positive.

    LAPACK's QR, never batched: under ``vmap`` it runs member by member
    (:func:`one_at_a_time`), since a batched LAPACK QR can deadlock XLA's CPU pool.

    Args:
        a: (n, k) float matrix with n >= k (of full column rank for a unique answer).

    Returns:
        (n, k) matrix with orthonormal columns, Q with ``sign(diag(R)) > 0``.
    """
    if a.ndim != 2 or a.shape[0] < a.shape[1]:
        raise ValueError(f"a: expected a matrix with at least as many rows as columns, got {a.shape}")
    return _one_q(a)


def orthogonal(scale: float = 1.0, column_axis: int = -1, dtype=jnp.float32) -> Callable:
    """An orthogonal initialiser, ``flax.linen.initializers.orthogonal``'s values, safe under ``vmap``.

    Args:
        scale: the matrices' scale (the gain).
        column_axis: the axis holding the columns that are made orthonormal.
        dtype: the default dtype of the weights.

    Returns:
        ``init(key, shape, dtype=dtype) -> array`` of ``shape`` (at least 2D): the
        parameter reshaped to (rows, columns) has orthonormal rows or columns, whichever
        are fewer, times ``scale``.
    """
    def init(key, shape, dtype=dtype):
        shape = tuple(int(d) for d in shape)
        if len(shape) < 2:
            raise ValueError(f"shape: the orthogonal initialiser needs at least 2 dimensions, got {shape}")
        if any(d == 0 for d in shape):
            return jnp.zeros(shape, dtype)
        n_cols = shape[column_axis]
        n_rows = math.prod(shape) // n_cols
        z = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), dtype)
        q = thin_q(z)
        if n_rows < n_cols:
            q = q.T
        q = q.reshape(tuple(np.delete(shape, column_axis)) + (n_cols,))
        return jnp.asarray(scale, dtype) * jnp.moveaxis(q, -1, column_axis)

    return init


def one_at_a_time(f: Callable) -> Callable:
    """``f`` that, under ``vmap`` at any depth, runs member by member in a ``lax.map``.

    For work that is cheap per member but must not be batched (an initialisation that
    calls LAPACK). Members are computed exactly as unbatched calls would compute them.
    Not differentiable (a ``custom_vmap``).
    """
    g = jax.custom_batching.custom_vmap(f)

    @g.def_vmap
    def rule(axis_size, in_batched, *args):
        flat, tree = jax.tree_util.tree_flatten(list(args))
        batched = jax.tree_util.tree_leaves(list(in_batched))
        mapped = [x for x, b in zip(flat, batched) if b]

        def member(xs):
            it = iter(xs)
            merged = [next(it) if b else x for x, b in zip(flat, batched)]
            return g(*jax.tree_util.tree_unflatten(tree, merged))  # g again: nested vmaps map too

        out = jax.lax.map(member, mapped)
        return out, jax.tree_util.tree_map(lambda _: True, out)

    return g


_one_q = one_at_a_time(_q_of)
