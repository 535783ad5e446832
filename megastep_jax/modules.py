"""Modules: the pieces of functionality most megastep environments are built from.

Everything here is a pure function, or a small frozen dataclass of *static* config (sizes,
default numbers) with a pure call. Numbers that a sweep may vary (speeds, fps, depth
range, lifespans) are call arguments too, defaulting to the dataclass's value, so an env
can pass traced values from its ``params`` and ``jax.vmap`` over them.

Shapes are written with ``...`` for any leading env axes: an env written for one
environment passes Agents with E=1, a batched env passes E envs. ``A`` is the number of
agents per env, ``R`` the render resolution, ``W = R // subsample`` the observation width.

Where megastep mutated its Core in place, these functions return new values:

- movement: ``agents = movement.apply(agents, actions, fps)`` sets velocities;
  ``agents, progress = movement(scenery, agents, actions, fps)`` also steps the physics.
- observations: ``r = render(scenery, agents, res, fov)`` once, then ``RGB(...)(r)``,
  ``Depth(...)(r)``, ``IMU(...)(agents)``.
- spawns and lifespans hold their arrays in pytrees and take explicit keys.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from . import geometry as geom
from . import spaces, validation
from .arrdict import arrdict, dotdict
from .state import Agents, Render

__all__ = [
    "ACTION_VELOCITY", "ACTION_ANGVELOCITY", "to_local_frame", "to_global_frame",
    "SimpleMovement", "MomentumMovement", "unpack", "render", "downsample", "Depth", "RGB",
    "IMU", "random_empty_positions", "RandomSpawns", "RandomLifespans", "Lifespans",
    "numpy_rng",
]

# The seven movement actions, as unit rows in the agent frame (x forward, y left):
# noop, two linear moves, two strafes, turn left, turn right. Values as megastep's.
ACTION_VELOCITY = np.array([[0., 0.], [0., 1.], [0., -1.], [1., 0.], [-1., 0.], [0., 0.], [0., 0.]],
                           np.float32)
ACTION_ANGVELOCITY = np.array([0., 0., 0., 0., 0., +1., -1.], np.float32)


def _agent_radius() -> float:
    try:
        from .core import AGENT_RADIUS
        return float(AGENT_RADIUS)
    except ImportError:  # core not built yet: the SPEC value
        return 0.15 / math.sqrt(2)


def to_local_frame(angles, p):
    """Rotates global-frame vectors into each agent's frame.

    Args:
        angles: (...,) agent angles in degrees.
        p: (..., 2) vectors in the global frame.

    Returns:
        (..., 2) vectors in the agent frame (x forward, y to the left).
    """
    a = jnp.deg2rad(angles)
    c, s = jnp.cos(a), jnp.sin(a)
    x, y = p[..., 0], p[..., 1]
    return jnp.stack([c * x + s * y, -s * x + c * y], -1)


def to_global_frame(angles, p):
    """Rotates agent-frame vectors into the global frame: the inverse of :func:`to_local_frame`."""
    a = jnp.deg2rad(angles)
    c, s = jnp.cos(a), jnp.sin(a)
    x, y = p[..., 0], p[..., 1]
    return jnp.stack([c * x - s * y, s * x + c * y], -1)


def _check_actions(actions, n_agents: int):
    actions = jnp.asarray(actions)
    if not jnp.issubdtype(actions.dtype, jnp.integer):
        raise ValueError(f"actions: expected integer movement actions, got dtype {actions.dtype}")
    if actions.shape[-1:] != (n_agents,):
        raise ValueError(f"actions: expected shape (..., {n_agents}), got {actions.shape}")
    if validation.is_concrete(actions):
        a = np.asarray(actions)
        if np.any(a < 0) or np.any(a >= len(ACTION_VELOCITY)):
            raise ValueError(f"actions: expected values in [0, {len(ACTION_VELOCITY)}), got {a.min()}..{a.max()}")
    return actions


def _physics(scenery, agents, fps, backend, collision):
    from . import core  # imported late: modules only need core when physics is stepped

    return core.physics(scenery, agents, fps=fps, collision=collision, backend=backend)


@dataclasses.dataclass(frozen=True)
class _Movement:
    """What both movements share: A agents, the seven actions, and physics after ``apply``."""

    n_agents: int = 1

    @property
    def space(self) -> spaces.MultiDiscrete:
        return spaces.MultiDiscrete(self.n_agents, len(ACTION_VELOCITY))

    def _rows(self, actions):
        """(agent-frame velocity rows (..., A, 2), turn signs (..., A)) of the actions."""
        actions = _check_actions(actions, self.n_agents)
        return jnp.asarray(ACTION_VELOCITY)[actions], jnp.asarray(ACTION_ANGVELOCITY)[actions]

    def apply(self, agents: Agents, actions, fps=10.0, *args) -> Agents:
        raise NotImplementedError

    def __call__(self, scenery, agents: Agents, actions, fps=10.0, *args, backend: str = "kernel",
                 collision: str = "stop", **overrides):
        """Sets velocities from actions (``apply``, with the same further arguments, e.g.
        ``speed=`` or ``decay=``) and steps the physics.

        Returns:
            (agents, progress (..., A)): as :func:`megastep_jax.core.physics`.
        """
        agents = self.apply(agents, actions, fps, *args, **overrides)
        return _physics(scenery, agents, fps, backend, collision)


@dataclasses.dataclass(frozen=True)
class SimpleMovement(_Movement):
    """Movement without momentum: each action sets a fixed velocity for one step.

    Actions: 0 noop, 1/2 move along +y/-y of the agent frame, 3/4 forward/backward,
    5/6 turn left/right. ``velocity = speed/fps * row``; the physics then moves by
    ``velocity/fps``, so at the defaults one step moves 0.1 m or turns 1.8 degrees
    (megastep's double division by fps, kept on purpose).

    Attributes:
        n_agents: A, agents per env.
        speed: metres per second for linear actions.
        ang_speed: degrees per second for turns.
    """

    speed: float = 10.0
    ang_speed: float = 180.0

    def apply(self, agents: Agents, actions, fps=10.0, speed=None, ang_speed=None) -> Agents:
        """Sets the agents' velocities from their actions.

        Args:
            agents: Agents with angles (..., A).
            actions: int (..., A) in [0, 7).
            fps: steps per second (may be traced).
            speed, ang_speed: override the dataclass's values (may be traced).

        Returns:
            Agents with new ``velocity`` (..., A, 2) and ``angvelocity`` (..., A).
        """
        rows, turns = self._rows(actions)
        speed = self.speed if speed is None else speed
        ang_speed = self.ang_speed if ang_speed is None else ang_speed
        velocity = to_global_frame(agents.angles, speed / fps * rows)
        angvelocity = ang_speed / fps * turns
        return agents.replace(velocity=jnp.broadcast_to(velocity, agents.velocity.shape).astype(jnp.float32),
                              angvelocity=jnp.broadcast_to(angvelocity, agents.angvelocity.shape).astype(jnp.float32))


@dataclasses.dataclass(frozen=True)
class MomentumMovement(_Movement):
    """Movement with momentum: actions accelerate, velocity decays by ``decay`` per step.

    ``velocity = (1 - decay)*velocity + accel/fps*row`` (row rotated to the global frame),
    likewise for the angular velocity with ``ang_accel``. Same seven actions as
    :class:`SimpleMovement`. The decay is per step, not per second, as in megastep.

    Attributes:
        n_agents: A, agents per env.
        accel: metres per second squared.
        ang_accel: degrees per second squared.
        decay: fraction of velocity lost per step; 0 is Newtonian.
    """

    accel: float = 5.0
    ang_accel: float = 180.0
    decay: float = 0.125

    def apply(self, agents: Agents, actions, fps=10.0, accel=None, ang_accel=None,
              decay=None) -> Agents:
        """Updates the agents' velocities from their actions; see the class docstring."""
        rows, turns = self._rows(actions)
        accel = self.accel if accel is None else accel
        ang_accel = self.ang_accel if ang_accel is None else ang_accel
        keep = 1 - (self.decay if decay is None else decay)
        velocity = keep * agents.velocity + to_global_frame(agents.angles, accel / fps * rows)
        angvelocity = keep * agents.angvelocity + ang_accel / fps * turns
        return agents.replace(velocity=velocity.astype(jnp.float32),
                              angvelocity=angvelocity.astype(jnp.float32))


def unpack(r: Render) -> arrdict:
    """A Render as an arrdict laid out for convolutions: a height axis of 1 everywhere.

    Returns:
        arrdict with ``indices``, ``locations``, ``dots``, ``distances`` (..., A, 1, R) and
        ``screen`` (..., A, 3, 1, R).
    """
    out = arrdict(indices=r.indices[..., None, :], locations=r.locations[..., None, :],
                  dots=r.dots[..., None, :], distances=r.distances[..., None, :])
    out["screen"] = jnp.moveaxis(r.screen, -1, -2)[..., :, None, :]
    return out


def render(scenery, agents: Agents, res: int = 64, fov=130.0, backend: str = "kernel") -> arrdict:
    """Renders the agents' views and lays them out as :func:`unpack` does.

    Args:
        scenery: Scenery of E envs.
        agents: Agents of E envs.
        res: R, pixels per view (static).
        fov: field of view in degrees (may be traced).
        backend: "kernel" or "reference".

    Returns:
        arrdict: ``screen`` (E, A, 3, 1, R), the other fields (E, A, 1, R).
    """
    from . import core

    return unpack(core.render(scenery, agents, res=res, fov=fov, backend=backend))


def downsample(x, subsample: int):
    """Splits the last (width) axis into groups: (..., W) -> (..., W // subsample, subsample).

    Follow it with a reduction over the last axis (mean, max, ``[..., k]``).
    """
    subsample = validation.positive_int("subsample", subsample)
    if x.shape[-1] % subsample:
        raise ValueError(f"subsample: expected a divisor of the width {x.shape[-1]}, got {subsample}")
    return x.reshape(*x.shape[:-1], x.shape[-1] // subsample, subsample)


def downsample_mean(x, subsample: int):
    """The mean of each group of ``subsample`` pixels along the last axis: (..., W) ->
    (..., W // subsample), as ``downsample(x, subsample).mean(-1)``.

    Summed as ``subsample`` strided slices, not a reduction: XLA's CPU reductions over a
    short trailing axis are several times slower (the observation modules' main cost).
    Groups wider than 16 pixels are reduced.
    """
    groups = downsample(x, subsample)
    if groups.shape[-1] > 16:  # wide groups: the reduction is fine and the graph stays small
        return groups.mean(-1)
    total = groups[..., 0]
    for k in range(1, groups.shape[-1]):
        total = total + groups[..., k]
    return total / groups.shape[-1]


@dataclasses.dataclass(frozen=True)
class _Strip:
    """Settings shared by the camera-strip observations: A agents, R pixels rendered, W = R/subsample seen."""

    n_agents: int = 1
    res: int = 64
    subsample: int = 1
    channels = 1  # of the observation space; a class constant, not a field

    def __post_init__(self):
        for name in ("n_agents", "res", "subsample"):
            validation.positive_int(name, getattr(self, name))
        if self.res % self.subsample:
            raise ValueError(f"subsample: expected a divisor of res={self.res}, got {self.subsample}")

    @property
    def space(self) -> spaces.MultiImage:
        return spaces.MultiImage(self.n_agents, self.channels, 1, self.res // self.subsample)


@dataclasses.dataclass(frozen=True)
class Depth(_Strip):
    """Depth observations: 1 at the near plane (the agent radius), 0 at ``max_depth``.

    ``1 - clip((distance - radius)/max_depth, 0, 1)`` averaged over ``subsample`` pixels.
    Rays that hit nothing read 0.

    Attributes:
        n_agents: A. res: R, the render resolution. subsample: pixels averaged per
        observation pixel. max_depth: metres at which depth reads 0.
    """

    max_depth: float = 10.0

    def __call__(self, r: arrdict, max_depth=None) -> jax.Array:
        """Depth from a :func:`render` result: float32 (..., A, 1, 1, W)."""
        max_depth = self.max_depth if max_depth is None else max_depth
        d = 1 - jnp.clip((r.distances - _agent_radius()) / max_depth, 0, 1)
        d = jnp.where(r.indices >= 0, d, 0.0)
        return downsample_mean(d, self.subsample)[..., None, :, :].astype(jnp.float32)

    @classmethod
    def plot_state(cls, state, axes=None):
        """Draws (A, 1, 1, W) numpy depth images as strips; returns the axes."""
        from . import plotting

        return plotting.plot_images(dotdict(d=state), axes)


@dataclasses.dataclass(frozen=True)
class RGB(_Strip):
    """RGB observations: the rendered screen averaged over ``subsample`` pixels.

    Values are gamma-decoded (linear); encode them for display.

    Attributes:
        n_agents: A. res: R, the render resolution. subsample: pixels averaged.
    """

    channels = 3

    def __call__(self, r: arrdict) -> jax.Array:
        """RGB from a :func:`render` result: float32 (..., A, 3, 1, W), in [0, 1]."""
        return jnp.clip(downsample_mean(r.screen, self.subsample), 0, 1).astype(jnp.float32)

    @classmethod
    def plot_state(cls, state, axes=None):
        """Draws (A, 3, 1, W) numpy RGB images as strips; returns the axes."""
        from . import plotting

        return plotting.plot_images(dotdict(rgb=state), axes)


@dataclasses.dataclass(frozen=True)
class IMU:
    """Velocity sensing, like an inertial measurement unit.

    Attributes:
        n_agents: A. speed_scale: m/s that reads 1. ang_scale: deg/s that reads 1.
    """

    n_agents: int = 1
    speed_scale: float = 10.0
    ang_scale: float = 360.0

    @property
    def space(self) -> spaces.MultiVector:
        return spaces.MultiVector(self.n_agents, 3)

    def __call__(self, agents: Agents) -> jax.Array:
        """float32 (..., A, 3): (angular velocity, local x velocity, local y velocity), scaled."""
        local = to_local_frame(agents.angles, agents.velocity) / self.speed_scale
        return jnp.concatenate([agents.angvelocity[..., None] / self.ang_scale, local], -1)


def numpy_rng(key_or_seed) -> np.random.Generator:
    """A numpy Generator seeded from a jax PRNG key or an int, for host-side sampling."""
    if isinstance(key_or_seed, (int, np.integer)):
        return np.random.default_rng(int(key_or_seed))
    key = key_or_seed
    data = np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                      else key)
    return np.random.default_rng(data.astype(np.uint32).ravel().tolist())


def random_empty_positions(geometries: Sequence[dotdict], n_agents: int, n_points: int,
                           key) -> np.ndarray:
    """Random points inside rooms (mask cells > 0) of each geometry, precomputed on the host.

    Sampling an empty point every step is expensive, so envs draw ``n_points`` per agent
    here once and pick among them at respawn time.

    Args:
        geometries: G geometry dotdicts.
        n_agents: A.
        n_points: P points per agent.
        key: a jax PRNG key or an int seed.

    Returns:
        float32 (G, A, P, 2): cell centres, (x, y) in metres.
    """
    if not geometries:
        raise ValueError("geometries: expected a non-empty list of geometries")
    validation.positive_int("n_agents", n_agents)
    validation.positive_int("n_points", n_points)
    rng = numpy_rng(key)
    out = []
    for i, g in enumerate(geometries):
        cells = np.argwhere(np.asarray(g["masks"]) > 0)
        if len(cells) == 0:
            raise ValueError(f"geometries: geometry {i} (id {g.get('id')}) has no room cells "
                             "(mask > 0) to spawn in")
        picks = cells[rng.integers(0, len(cells), (n_agents, n_points))]
        out.append(geom.centers(picks, g["masks"].shape, g["res"]))
    return np.stack(out).astype(np.float32)


@struct.dataclass
class RandomSpawns:
    """Precomputed spawn points; respawning picks one at random per agent.

    Build with :meth:`create`. The arrays are shared by every env using the same geometry
    index, so a vmapped batch gathers only the picked points.
    """

    positions: jax.Array  # (G, A, P, 2) float32, metres
    angles: jax.Array     # (G, A, P) float32, degrees in [-180, 180)

    @classmethod
    def create(cls, geometries: Sequence[dotdict], n_agents: int, key, n_spawns: int = 100):
        """Draws ``n_spawns`` points and angles per geometry and agent from ``key``."""
        positions = random_empty_positions(geometries, n_agents, n_spawns, key)
        rng = numpy_rng(jax.random.fold_in(key, 1) if not isinstance(key, (int, np.integer)) else key + 1)
        angles = rng.uniform(-180, 180, positions.shape[:-1]).astype(np.float32)
        return cls(positions=jnp.asarray(positions), angles=jnp.asarray(angles))

    def __call__(self, key: jax.Array, agents: Agents, reset, geometry) -> Agents:
        """Moves agents where ``reset`` is true to random spawn points, velocities zeroed.

        Args:
            key: PRNG key.
            agents: Agents with angles (..., A).
            reset: bool, broadcastable to (..., A).
            geometry: int (...) or scalar, each env's geometry index into the spawns.

        Returns:
            Agents.
        """
        n_points = self.angles.shape[-1]
        shape = agents.angles.shape
        choice = jax.random.randint(key, shape, 0, n_points)
        g = jnp.broadcast_to(jnp.asarray(geometry)[..., None], shape)
        a = jnp.broadcast_to(jnp.arange(shape[-1]), shape)
        pos = self.positions[g, a, choice]
        ang = self.angles[g, a, choice]
        reset = jnp.broadcast_to(reset, shape)
        return agents.replace(
            positions=jnp.where(reset[..., None], pos, agents.positions),
            angles=jnp.where(reset, ang, agents.angles),
            velocity=jnp.where(reset[..., None], 0.0, agents.velocity),
            angvelocity=jnp.where(reset, 0.0, agents.angvelocity))


@struct.dataclass
class Lifespans:
    """Per-agent ages and the lifespans they are allowed."""

    lifespans: jax.Array      # (..., A) int32, steps lived
    max_lifespans: jax.Array  # (..., A) int32, steps allowed this life


@dataclasses.dataclass(frozen=True)
class RandomLifespans:
    """Random lifespans, so synchronous envs drift apart into a mix of ages.

    Lifespans are uniform in ``[min_lifespan, max_lifespan)`` (min defaults to max // 2) and
    re-rolled at every reset.
    """

    max_lifespan: int
    min_lifespan: Optional[int] = None

    def __post_init__(self):
        lo = self.max_lifespan // 2 if self.min_lifespan is None else self.min_lifespan
        if not 0 <= lo < self.max_lifespan:
            raise ValueError(f"min_lifespan, max_lifespan: expected 0 <= min < max, got "
                             f"{lo}, {self.max_lifespan}")

    def _bounds(self, max_lifespan, min_lifespan):
        hi = self.max_lifespan if max_lifespan is None else max_lifespan
        if min_lifespan is not None:
            lo = min_lifespan
        elif self.min_lifespan is not None and max_lifespan is None:
            lo = self.min_lifespan
        else:
            lo = hi // 2
        return lo, hi

    def init(self, key: jax.Array, shape, max_lifespan=None, min_lifespan=None) -> Lifespans:
        """Fresh ages of 0 with freshly drawn lifespans, int32 ``shape`` (e.g. (A,))."""
        lo, hi = self._bounds(max_lifespan, min_lifespan)
        return Lifespans(lifespans=jnp.zeros(shape, jnp.int32),
                         max_lifespans=jax.random.randint(key, shape, lo, hi, jnp.int32))

    def __call__(self, key: jax.Array, state: Lifespans, reset=None, max_lifespan=None,
                 min_lifespan=None):
        """Ages every agent one step.

        Args:
            key: PRNG key for the re-rolled lifespans.
            state: the current Lifespans.
            reset: optional bool (..., A), agents reset for other reasons.

        Returns:
            (state, expired): ``expired`` bool (..., A) marks agents that reached their
            lifespan or were in ``reset``; their age is 0 again and lifespan re-drawn.
        """
        lifespans = state.lifespans + 1
        expired = lifespans >= state.max_lifespans
        if reset is not None:
            expired = expired | reset
        fresh = self.init(key, lifespans.shape, max_lifespan, min_lifespan)
        return Lifespans(lifespans=jnp.where(expired, 0, lifespans),
                         max_lifespans=jnp.where(expired, fresh.max_lifespans, state.max_lifespans)), expired


def first_person_senses(n_agents: int, res: int, subsample: int):
    """megastep's Explorer and Deathmatch senses and movement, as those envs use them.

    Returns:
        (RGB, Depth, IMU, MomentumMovement) modules for ``n_agents`` agents.
    """
    return (RGB(n_agents, res, subsample), Depth(n_agents, res, subsample), IMU(n_agents),
            MomentumMovement(n_agents))
