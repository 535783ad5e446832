"""Observation and action spaces: shapes and bounds, with sampling and membership.

Spaces are small frozen dataclasses (hashable, so they can be static arguments). A dict of
spaces is a :class:`~megastep_jax.arrdict.dotdict` of them; :func:`sample` and
:func:`contains` accept either.

``shape`` is the shape of one member (what :func:`sample` and :func:`zeros` return), as in
gymnasium and gymnax. megastep's ``MultiDiscrete.shape`` is instead ``(n_agents,
n_actions)``, the shape of the policy's logits; here that is
:attr:`MultiDiscrete.logits_shape`, and ``shape`` is the actions' ``(n_agents,)``.

:func:`to_gymnasium` and :func:`to_gymnax` give the matching spaces of those libraries.
"""
from __future__ import annotations

import dataclasses
from typing import Union

import jax
import jax.numpy as jnp

from . import validation
from .arrdict import arrdict, dotdict

__all__ = ["MultiDiscrete", "MultiConstant", "MultiEmpty", "MultiImage", "MultiVector", "Box", "Space",
           "sample", "contains", "zeros", "is_space_tree", "to_gymnasium", "to_gymnax"]



@dataclasses.dataclass(frozen=True)
class MultiDiscrete:
    """One choice out of ``n_actions`` for each of ``n_agents`` agents: int32 (n_agents,)."""

    n_agents: int
    n_actions: int

    def __post_init__(self):
        validation.positive_int("n_agents", self.n_agents)
        validation.positive_int("n_actions", self.n_actions)

    @property
    def shape(self) -> tuple[int, ...]:
        """An action's shape, ``(n_agents,)`` (megastep's ``shape`` is :attr:`logits_shape`)."""
        return (self.n_agents,)

    @property
    def logits_shape(self) -> tuple[int, ...]:
        """``(n_agents, n_actions)``: one score per choice per agent, megastep's ``shape``."""
        return (self.n_agents, self.n_actions)

    dtype = jnp.int32

    def sample(self, key: jax.Array, batch_shape: tuple[int, ...] = ()) -> jax.Array:
        """Uniform actions: int32 (*batch_shape, n_agents)."""
        return jax.random.randint(key, (*batch_shape, *self.shape), 0, self.n_actions,
                                  dtype=jnp.int32)

    def contains(self, x) -> jax.Array:
        x = jnp.asarray(x)
        ok = jnp.issubdtype(x.dtype, jnp.integer) and x.shape[-1:] == self.shape
        return jnp.asarray(ok) & jnp.all((x >= 0) & (x < self.n_actions))


@dataclasses.dataclass(frozen=True)
class MultiConstant:
    """One value per agent that never changes: int32 (n_agents,), always 0.

    As an action space it is a choice with one option (an agent that has nothing to
    decide; its head samples 0 with log-probability 0). As an observation it carries no
    information (its intake is a learned constant). megastep's ``MultiConstant(n_agents)``.
    """

    n_agents: int

    def __post_init__(self):
        validation.positive_int("n_agents", self.n_agents)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_agents,)

    n_actions = 1  # as an action space: the one choice
    dtype = jnp.int32

    def sample(self, key: jax.Array, batch_shape: tuple[int, ...] = ()) -> jax.Array:
        """The constant: zeros int32 (*batch_shape, n_agents)."""
        return jnp.zeros((*batch_shape, *self.shape), jnp.int32)

    def contains(self, x) -> jax.Array:
        x = jnp.asarray(x)
        ok = jnp.issubdtype(x.dtype, jnp.integer) and x.shape[-1:] == self.shape
        return jnp.asarray(ok) & jnp.all(x == 0)


@dataclasses.dataclass(frozen=True)
class MultiEmpty:
    """An observation with no values: float32 (n_agents, 0).

    For envs (or keys) that observe nothing, e.g. a bandit; its intake is a learned
    constant. megastep's ``MultiEmpty()`` takes no arguments and has no shape; here the
    agent count (default 1) gives members a shape so that batching and ``zeros`` work.
    """

    n_agents: int = 1

    def __post_init__(self):
        validation.positive_int("n_agents", self.n_agents)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_agents, 0)

    dtype = jnp.float32

    def sample(self, key: jax.Array, batch_shape: tuple[int, ...] = ()) -> jax.Array:
        """The only member: float32 (*batch_shape, n_agents, 0)."""
        return jnp.zeros((*batch_shape, *self.shape), jnp.float32)

    def contains(self, x) -> jax.Array:
        x = jnp.asarray(x)
        return jnp.asarray(jnp.issubdtype(x.dtype, jnp.floating) and x.shape[-2:] == self.shape)


@dataclasses.dataclass(frozen=True)
class MultiImage:
    """An image per agent in [0, 1]: float32 (n_agents, channels, height, width)."""

    n_agents: int
    channels: int
    height: int
    width: int

    def __post_init__(self):
        for f in dataclasses.fields(self):
            validation.positive_int(f.name, getattr(self, f.name))

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_agents, self.channels, self.height, self.width)

    dtype = jnp.float32
    low, high = 0.0, 1.0

    def sample(self, key: jax.Array, batch_shape: tuple[int, ...] = ()) -> jax.Array:
        """Uniform pixels in [0, 1): float32 (*batch_shape, n_agents, channels, height, width)."""
        return jax.random.uniform(key, (*batch_shape, *self.shape), jnp.float32)

    def contains(self, x) -> jax.Array:
        x = jnp.asarray(x)
        ok = jnp.issubdtype(x.dtype, jnp.floating) and x.shape[-4:] == self.shape
        return jnp.asarray(ok) & jnp.all((x >= self.low) & (x <= self.high))


@dataclasses.dataclass(frozen=True)
class MultiVector:
    """A vector per agent, unbounded unless ``low``/``high`` say: float32 (n_agents, dim)."""

    n_agents: int
    dim: int
    low: float = -float("inf")
    high: float = float("inf")

    def __post_init__(self):
        validation.positive_int("n_agents", self.n_agents)
        validation.positive_int("dim", self.dim)
        if not self.low < self.high:
            raise ValueError(f"low, high: expected low < high, got {self.low}, {self.high}")

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_agents, self.dim)

    dtype = jnp.float32

    def sample(self, key: jax.Array, batch_shape: tuple[int, ...] = ()) -> jax.Array:
        """Uniform in [low, high] clipped to [-1, 1] where unbounded: (*batch_shape, n_agents, dim)."""
        lo, hi = max(self.low, -1.0), min(self.high, 1.0)
        if not lo < hi:  # a bound lies outside [-1, 1]: sample just inside it
            lo, hi = (self.low, self.low + 1.0) if self.low > -float("inf") else (self.high - 1.0, self.high)
        return jax.random.uniform(key, (*batch_shape, *self.shape), jnp.float32, lo, hi)

    def contains(self, x) -> jax.Array:
        x = jnp.asarray(x)
        ok = jnp.issubdtype(x.dtype, jnp.floating) and x.shape[-2:] == self.shape
        return jnp.asarray(ok) & jnp.all((x >= self.low) & (x <= self.high))


@dataclasses.dataclass(frozen=True)
class Box:
    """Float arrays of any fixed shape within [low, high], e.g. normalised observations."""

    shape: tuple
    low: float = -float("inf")
    high: float = float("inf")

    def __post_init__(self):
        if not isinstance(self.shape, tuple) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in self.shape):
            raise ValueError(f"shape: expected a tuple of positive ints, got {self.shape!r}")
        if not self.low < self.high:
            raise ValueError(f"low, high: expected low < high, got {self.low}, {self.high}")

    dtype = jnp.float32

    @property
    def n_agents(self) -> int:
        return self.shape[0]

    def sample(self, key: jax.Array, batch_shape: tuple[int, ...] = ()) -> jax.Array:
        lo, hi = max(self.low, -1.0), min(self.high, 1.0)
        if not lo < hi:
            lo, hi = (self.low, self.low + 1.0) if self.low > -float("inf") else (self.high - 1.0, self.high)
        return jax.random.uniform(key, (*batch_shape, *self.shape), jnp.float32, lo, hi)

    def contains(self, x) -> jax.Array:
        x = jnp.asarray(x)
        ok = jnp.issubdtype(x.dtype, jnp.floating) and x.shape[x.ndim - len(self.shape):] == self.shape
        return jnp.asarray(ok) & jnp.all((x >= self.low) & (x <= self.high))


Space = Union[MultiDiscrete, MultiConstant, MultiEmpty, MultiImage, MultiVector, Box]
_SPACES = (MultiDiscrete, MultiConstant, MultiEmpty, MultiImage, MultiVector, Box)


def sample(space, key: jax.Array, batch_shape: tuple[int, ...] = ()):
    """Draws a member of a space or of a dotdict of spaces (an arrdict then).

    Args:
        space: a space or a (nested) dotdict of spaces.
        key: a jax PRNG key.
        batch_shape: leading dims to prepend, e.g. ``(n_envs,)``.
    """
    if isinstance(space, dict):
        keys = jax.random.split(key, len(space))
        return arrdict({k: sample(s, kk, batch_shape) for (k, s), kk in zip(space.items(), keys)})
    return space.sample(key, batch_shape)


def zeros(space, batch_shape: tuple[int, ...] = ()):
    """All-zeros member of a space or dotdict of spaces (an arrdict then), e.g. for init."""
    if isinstance(space, dict):
        return arrdict({k: zeros(s, batch_shape) for k, s in space.items()})
    return jnp.zeros((*batch_shape, *space.shape), space.dtype)


def contains(space, x) -> jax.Array:
    """Whether ``x`` lies in a space or a dotdict of spaces, as a boolean scalar array."""
    if isinstance(space, dict):
        if not isinstance(x, dict) or set(x) != set(space):
            return jnp.asarray(False)
        return jnp.all(jnp.stack([contains(s, x[k]) for k, s in space.items()]))
    return space.contains(x)


def is_space_tree(x) -> bool:
    """True for a space or a dotdict whose leaves are spaces."""
    if isinstance(x, dotdict):
        return all(is_space_tree(v) for v in x.values())
    return isinstance(x, _SPACES)


def to_gymnasium(space):
    """The matching ``gymnasium.spaces`` object (a Dict for a dotdict of spaces).

    Requires gymnasium (the ``gym`` extra).
    """
    import gymnasium
    import numpy as np

    if isinstance(space, dict):
        return gymnasium.spaces.Dict({k: to_gymnasium(s) for k, s in space.items()})
    if isinstance(space, (MultiDiscrete, MultiConstant)):
        return gymnasium.spaces.MultiDiscrete(np.full(space.shape, space.n_actions))
    if isinstance(space, MultiImage):
        return gymnasium.spaces.Box(0.0, 1.0, space.shape, np.float32)
    if isinstance(space, MultiEmpty):
        return gymnasium.spaces.Box(0.0, 0.0, space.shape, np.float32)
    if isinstance(space, (MultiVector, Box)):
        return gymnasium.spaces.Box(space.low, space.high, space.shape, np.float32)
    raise ValueError(f"space: expected a megastep_jax space or dotdict of them, got {type(space).__name__}")


def to_gymnax(space):
    """The matching gymnax space of ONE agent (a gymnax ``Dict`` for a dotdict of spaces).

    gymnax envs are single-agent, so the agent axis is dropped: ``MultiDiscrete(A, n)`` ->
    ``Discrete(n)``, ``MultiConstant(A)`` -> ``Discrete(1)``, ``MultiImage(A, C, H, W)`` ->
    ``Box(0, 1, (C, H, W))``, ``MultiVector(A, d)`` -> ``Box(low, high, (d,))``,
    ``MultiEmpty(A)`` -> ``Box(0, 0, (0,))``, ``Box((A, *s))`` -> ``Box(low, high, s)``.
    Boxes are :class:`megastep_jax.gymnax.Box`, whose ``sample`` stays finite where a bound
    is infinite. Requires gymnax (the ``gymnax`` extra).
    """
    # deferred: gymnax is an optional dependency, imported only by who converts to it
    from gymnax.environments import spaces as gxs

    from .gymnax import Box as GymnaxBox

    if isinstance(space, dict):
        return gxs.Dict({k: to_gymnax(s) for k, s in space.items()})
    if isinstance(space, (MultiDiscrete, MultiConstant)):
        return gxs.Discrete(space.n_actions)
    if isinstance(space, MultiImage):
        return GymnaxBox(0.0, 1.0, space.shape[1:], jnp.float32)
    if isinstance(space, MultiEmpty):
        return GymnaxBox(0.0, 0.0, (0,), jnp.float32)
    if isinstance(space, (MultiVector, Box)):
        return GymnaxBox(space.low, space.high, space.shape[1:], jnp.float32)
    raise ValueError(f"space: expected a megastep_jax space or dotdict of them, got {type(space).__name__}")
