"""A matrix product whose weight gradient runs as a plain matrix product on CPU.

A dense layer's weight gradient is ``x^T @ g``: a contraction over the batch, the first
axis of both operands. XLA's CPU backend hands that shape to a generic dot routine rather
than to its fast (YNNPACK) path, which wants the contracted axis last on the left and first
on the right. For the learner's shapes (a few hundred rows, 7-192 features) it ran 1.4-4.9x
slower than the forward product of the same size; it was the largest single cost of a PPO
update on the demo's settings. Materialising the narrower operand's transpose first (behind
an optimisation barrier, so XLA does not fold it back into the dot) gives the fast path a
plain product. The values are the same products, summed in another order.

:func:`matmul` is a ``custom_jvp``: its tangent rule is written so that reverse mode's
transpose of it takes that form, and forward mode (``jax.jvp``, ``jax.hessian``) still
works. :func:`weight_grad` is the same product for hand-written backward passes.
:func:`dot_general` has ``jax.lax.dot_general``'s signature, for
``flax.linen.Dense(dot_general=...)``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["matmul", "dot_general", "weight_grad"]


@jax.custom_jvp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w`` for ``x (..., A)`` and ``w (A, B)`` -> ``(..., B)``."""
    return x @ w


@matmul.defjvp
def _matmul_jvp(primals, tangents):
    x, w = primals
    dx, dw = tangents
    return x @ w, dx @ w + _times_weight_tangent(x, dw)


def _times_weight_tangent(x, dw):
    """``x @ dw``, written so that reverse mode's transpose of it, ``x^T @ g``, is the fast
    form of :func:`weight_grad`.

    Transposing a linear map reverses its steps and maps an optimisation barrier to one; so
    a barrier placed here around a transpose lands around the transposed operand of the
    reverse pass's product, where it keeps XLA from folding that transpose into the dot.
    """
    barrier = jax.lax.optimization_barrier
    x2 = x.reshape(-1, x.shape[-1])
    if min(dw.shape) == 1:  # a matrix-vector product: XLA's own is faster
        return x @ dw
    if _transpose_x(*dw.shape):
        # reverse: barrier(x^T) @ g (x^T is computed from the primal, in the forward pass)
        return barrier(x2.T).T.reshape(x.shape) @ dw
    # reverse: barrier(barrier(g^T) @ x)^T
    v = barrier(dw.T) @ x2.T                                  # (B, N)
    return barrier(v).T.reshape(*x.shape[:-1], dw.shape[1])


def weight_grad(x: jax.Array, g: jax.Array) -> jax.Array:
    """``x^T @ g`` summed over every leading axis: ``x (..., A)``, ``g (..., B)`` -> ``(A, B)``,
    the gradient of ``x @ w`` with respect to ``w`` for the output's gradient ``g``: the
    transpose of :func:`matmul`'s weight tangent, so the same product reverse mode runs."""
    w = jax.ShapeDtypeStruct((x.shape[-1], g.shape[-1]), g.dtype)
    return jax.linear_transpose(lambda dw: _times_weight_tangent(x, dw), w)(g)[0]


def _transpose_x(a: int, b: int) -> bool:
    """For ``x^T @ g`` with ``x (N, a)``, ``g (N, b)``: transpose ``x`` (else ``g``). The
    narrower one: the cheaper copy, and the product measured faster either way."""
    return a <= b


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """``jax.lax.dot_general`` for a dense layer's contraction (the last axis of ``lhs``
    with the first of a 2D ``rhs``, no batch axes), through :func:`matmul`; any other
    contraction, precision or element type goes to ``jax.lax.dot_general`` unchanged."""
    dense = (((jnp.ndim(lhs) - 1,), (0,)), ((), ()))
    if (jnp.ndim(rhs) != 2 or tuple(map(tuple, dimension_numbers[0])) != dense[0]
            or tuple(map(tuple, dimension_numbers[1])) != dense[1]
            or precision is not None or preferred_element_type is not None
            or jnp.result_type(lhs) != jnp.result_type(rhs)):
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                   preferred_element_type=preferred_element_type)
    return matmul(lhs, rhs)
