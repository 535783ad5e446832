"""Network heads built from spaces: intakes turn observations into a vector, outputs turn
a vector into action distributions.

As in megastep's demo, an agent's first and last layers are derived mechanically from the
environment's spaces, so changing an env's observations or actions needs no change to the
agent::

    intake = heads.intake(env.observation_space(params), width=256)
    output = heads.output(env.action_space(params), width=256)

Every (env, agent) pair is treated as its own stream: heads act on the features of ONE
agent and treat every leading axis as batch. A ``MultiImage(A, C, H, W)`` observation of
shape ``(..., C, H, W)`` becomes ``(..., width)``; a ``MultiDiscrete(A, n)`` output head
turns ``(..., width)`` into log-probabilities ``(..., n)``. The agent axis A of a batch
is just one more leading axis, and all agents share parameters.

Action distributions are plain arrays (or arrdicts of them) of normalised log-probabilities;
:func:`sample`, :func:`log_prob`, :func:`entropy` and :func:`mode` work on either.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from megastep_jax import spaces

from . import matmul
from .initializers import orthogonal
from megastep_jax.arrdict import arrdict

__all__ = [
    "MultiVectorIntake", "MultiImageIntake", "ConstantIntake", "ConcatIntake", "intake",
    "MultiDiscreteOutput", "MultiConstantOutput", "DictOutput", "ValueOutput", "output",
    "sample", "log_prob", "entropy", "mode", "freeze_space",
]

# ReLU layers keep unit-variance activations with this gain (orthogonal init, as in the
# PPO implementation-details literature); policy logits start near uniform.
_RELU_GAIN = float(np.sqrt(2))
_POLICY_GAIN = 0.01


def _dense(features: int, gain: float = _RELU_GAIN, name: str | None = None) -> nn.Dense:
    return nn.Dense(features, kernel_init=orthogonal(gain),
                    bias_init=nn.initializers.zeros, dot_general=matmul.dot_general, name=name)


def freeze_space(space):
    """A space tree as Flax module attributes can hold it without reordering its keys.

    Flax turns dict attributes into key-sorted FrozenDicts; a dict of spaces becomes a
    tuple of (key, space) pairs instead, recursively, so outputs keep the env's key order.
    """
    if isinstance(space, Mapping):
        return tuple((k, freeze_space(v)) for k, v in space.items())
    return space


def _is_items(space) -> bool:
    return isinstance(space, tuple) and all(
        isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in space)


def _check_width(width: Any) -> int:
    if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
        raise ValueError(f"width: expected a positive int, got {width!r}")
    return width


def _check_trailing(name: str, x: jax.Array, expected: tuple[int, ...]) -> None:
    if x.ndim < len(expected) or tuple(x.shape[x.ndim - len(expected):]) != expected:
        raise ValueError(
            f"{name}: expected an array ending in shape {expected}, got shape {tuple(x.shape)}")


class MultiVectorIntake(nn.Module):
    """One agent's vector through a two-layer ReLU MLP.

    Attributes:
        space: the ``MultiVector(A, dim)`` the observations belong to.
        width: output features.

    Call: ``(..., dim) -> (..., width)``.
    """

    space: spaces.MultiVector
    width: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        _check_trailing("obs", obs, (self.space.dim,))
        x = nn.relu(_dense(self.width)(obs.astype(jnp.float32)))
        return nn.relu(_dense(self.width)(x))


class MultiImageIntake(nn.Module):
    """One agent's pixel strip through 1D convolutions along the width, then an MLP.

    megastep's cameras see a strip one pixel high, so the convolutions slide along the
    width only; channels and height are stacked as input features.

    Attributes:
        space: the ``MultiImage(A, C, H, W)`` the observations belong to.
        width: output features.
        conv_features: features of each convolution.
        conv_kernels: kernel sizes, one per convolution.
        conv_strides: strides, one per convolution.

    Call: ``(..., C, H, W) -> (..., width)``. uint8 images are scaled to [0, 1].
    """

    space: spaces.MultiImage
    width: int
    conv_features: Sequence[int] = (32, 64, 128)
    conv_kernels: Sequence[int] = (8, 4, 3)
    conv_strides: Sequence[int] = (4, 2, 2)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        s = self.space
        _check_trailing("obs", obs, (s.channels, s.height, s.width))
        if not len(self.conv_features) == len(self.conv_kernels) == len(self.conv_strides):
            raise ValueError(
                "conv_features, conv_kernels, conv_strides: expected sequences of one length, "
                f"got {len(self.conv_features)}, {len(self.conv_kernels)}, {len(self.conv_strides)}")
        if obs.dtype == jnp.uint8:
            obs = obs / 255.0
        batch = obs.shape[:-3]
        # (..., C, H, W) -> (N, W, C*H): width is the spatial axis of a 1D convolution.
        x = obs.astype(jnp.float32).reshape((-1, s.channels * s.height, s.width))
        x = jnp.swapaxes(x, -1, -2)
        for f, k, st in zip(self.conv_features, self.conv_kernels, self.conv_strides):
            x = nn.Conv(f, (k,), strides=(st,), padding="SAME",
                        kernel_init=orthogonal(_RELU_GAIN))(x)
            x = nn.relu(x)
        x = x.reshape((*batch, -1))
        x = nn.relu(_dense(self.width)(x))
        return nn.relu(_dense(self.width)(x))


class ConstantIntake(nn.Module):
    """An observation that carries no information (``MultiEmpty`` or ``MultiConstant``): a
    learned vector, the same for every stream.

    Attributes:
        space: the ``MultiEmpty(A)`` (observations ``(..., 0)``) or ``MultiConstant(A)``
            (observations ``(...)``, one int per agent).
        width: output features.

    Call: ``(..., 0)`` or ``(...)`` -> ``(..., width)``.
    """

    space: Any
    width: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        if isinstance(self.space, spaces.MultiEmpty):
            _check_trailing("obs", obs, (0,))
            batch = obs.shape[:-1]
        else:
            batch = obs.shape
        value = self.param("value", nn.initializers.normal(1.0), (self.width,))
        return jnp.broadcast_to(value, (*batch, self.width))  # no ReLU: it could start dead


def check_dict_obs(obs, space) -> None:
    """Raises ValueError unless ``obs`` is a dict with exactly the keys of ``space`` (a tuple
    of (key, space) pairs)."""
    names = [k for k, _ in space]
    if not isinstance(obs, Mapping) or set(obs) != set(names):
        got = sorted(obs) if isinstance(obs, Mapping) else type(obs).__name__
        raise ValueError(f"obs: expected a dict with keys {sorted(names)}, got {got}")


class ConcatIntake(nn.Module):
    """A dict of observations: each through its own intake, concatenated, projected.

    Attributes:
        space: a tuple of (key, space) pairs (see :func:`freeze_space`).
        width: output features (and the width of every sub-intake).
        image_kwargs: extra attributes for every :class:`MultiImageIntake` (as a tuple of
            (name, value) pairs, so the module stays hashable).

    Call: ``arrdict of (..., *feature shape) -> (..., width)``.
    """

    space: Any
    width: int
    image_kwargs: tuple = ()

    @nn.compact
    def __call__(self, obs) -> jax.Array:
        check_dict_obs(obs, self.space)
        ys = [intake(s, self.width, image_kwargs=self.image_kwargs, name=f"intake_{k}")(obs[k])
              for k, s in self.space]
        return nn.relu(_dense(self.width)(jnp.concatenate(ys, axis=-1)))


def intake(space, width: int, *, image_kwargs: tuple = (), name: str | None = None) -> nn.Module:
    """The intake head for a space or a dotdict of spaces.

    Args:
        space: a ``MultiVector``, a ``MultiImage``, a ``MultiEmpty``, a ``MultiConstant``
            or a dotdict of them.
        width: features of the vector the head outputs.
        image_kwargs: (name, value) pairs passed to every :class:`MultiImageIntake`,
            e.g. ``(("conv_features", (8, 8)), ("conv_kernels", (4, 4)), ("conv_strides", (2, 2)))``.
        name: the Flax module name.

    Raises:
        ValueError: for a space no intake handles, or a bad width.
    """
    _check_width(width)
    space = freeze_space(space)
    if _is_items(space):
        if len(space) == 0:
            raise ValueError("space: expected a non-empty dict of spaces")
        return ConcatIntake(space, width, tuple(image_kwargs), name=name)
    if isinstance(space, spaces.MultiImage):
        return MultiImageIntake(space, width, **dict(image_kwargs), name=name)
    if isinstance(space, spaces.MultiVector):
        return MultiVectorIntake(space, width, name=name)
    if isinstance(space, (spaces.MultiEmpty, spaces.MultiConstant)):
        return ConstantIntake(space, width, name=name)
    raise ValueError(f"space: expected a MultiImage, MultiVector, MultiEmpty, MultiConstant or dict of "
                     f"them, got {space!r}")


class MultiDiscreteOutput(nn.Module):
    """Log-probabilities over one agent's ``n_actions`` choices.

    Call: ``(..., width) -> (..., n_actions)``, normalised log-probabilities.
    """

    space: spaces.MultiDiscrete
    width: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check_trailing("x", x, (self.width,))
        return jax.nn.log_softmax(_dense(self.space.n_actions, gain=_POLICY_GAIN)(x), axis=-1)


class MultiConstantOutput(nn.Module):
    """The one-choice distribution of a ``MultiConstant`` action: log-probability 0 for
    action 0, so :func:`sample` and :func:`mode` give 0, :func:`log_prob` 0 and
    :func:`entropy` 0. It has no parameters.

    Call: ``(..., width) -> (..., 1)`` zeros.
    """

    space: spaces.MultiConstant
    width: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check_trailing("x", x, (self.width,))
        return jnp.zeros((*x.shape[:-1], 1), jnp.float32)


class DictOutput(nn.Module):
    """A dict of action spaces: one projection of the core vector per key, then its head.

    ``space`` is a tuple of (key, space) pairs (see :func:`freeze_space`).

    Call: ``(..., width) -> arrdict`` of each key's log-probabilities.
    """

    space: Any
    width: int

    @nn.compact
    def __call__(self, x: jax.Array) -> arrdict:
        _check_trailing("x", x, (self.width,))
        return arrdict({k: output(s, self.width, name=f"output_{k}")(
            x if isinstance(s, spaces.MultiConstant) else _dense(self.width, name=f"proj_{k}")(x))
            for k, s in self.space})


class ValueOutput(nn.Module):
    """A scalar value per stream: ``(..., width) -> (...)``."""

    width: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check_trailing("x", x, (self.width,))
        return _dense(1, gain=1.0)(x)[..., 0]


def output(space, width: int, *, name: str | None = None) -> nn.Module:
    """The output head for an action space (``MultiDiscrete``, ``MultiConstant``) or a
    dotdict of them.

    Raises:
        ValueError: for a space no output head handles, or a bad width.
    """
    _check_width(width)
    space = freeze_space(space)
    if _is_items(space):
        if len(space) == 0:
            raise ValueError("space: expected a non-empty dict of spaces")
        return DictOutput(space, width, name=name)
    if isinstance(space, spaces.MultiDiscrete):
        return MultiDiscreteOutput(space, width, name=name)
    if isinstance(space, spaces.MultiConstant):
        return MultiConstantOutput(space, width, name=name)
    if isinstance(space, spaces.MultiEmpty):
        raise ValueError("space: MultiEmpty is an observation space (nothing to observe); an action with "
                         "nothing to choose is MultiConstant")
    raise ValueError(f"space: expected a MultiDiscrete, MultiConstant or a dict of them, got {space!r}")


# Distributions: trees of normalised log-probabilities with the choice on the last axis.

def _leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def sample(key: jax.Array, logits):
    """Draws an action per stream: int32 arrays shaped like ``logits`` minus its last axis."""
    leaves, treedef = jax.tree_util.tree_flatten(logits)
    keys = jax.random.split(key, len(leaves))
    drawn = [jax.random.categorical(k, l, axis=-1).astype(jnp.int32) for k, l in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(treedef, drawn)


def mode(logits):
    """The most likely action per stream (for greedy evaluation)."""
    return jax.tree_util.tree_map(lambda l: jnp.argmax(l, axis=-1).astype(jnp.int32), logits)


def log_prob(logits, actions) -> jax.Array:
    """Log-probability of ``actions``, summed over the keys of a dict: shape ``(...)``."""
    per_key = jax.tree_util.tree_map(
        lambda l, a: jnp.take_along_axis(l, a[..., None].astype(jnp.int32), axis=-1)[..., 0],
        logits, actions)
    return sum(_leaves(per_key))


def entropy(logits) -> jax.Array:
    """Entropy of the joint distribution (independent keys, so a sum): shape ``(...)``."""
    return sum(-jnp.sum(jnp.exp(l) * l, axis=-1) for l in _leaves(logits))
