"""The scene runtime an env holds: scenery pool, spawns, render, physics, plot state.

:class:`SceneRuntime` is what the demo envs (and the tutorial's) are built on. It is
written for ONE env: agents are :class:`~megastep_jax.state.Agents` with (A,) poses (no
env axis; the runtime adds the kernels' env axis of 1 and takes it off again), and a
geometry index picks which of the runtime's G geometries the env plays in.

Sharing the scenery under vmap
------------------------------
The runtime keeps the scenery of all G geometries on the (static) env object, and an
env's state holds only a geometry index. Under ``vmap`` over thousands of envs the
scenery is therefore one unbatched operand: the compiled kernels broadcast it (they are
called with ``vmap_method="expand_dims"``) and the reference kernels gather from it, so
nothing proportional to the scenery or to G is copied per env per step. To make that
hold for the texture arrays too, :class:`SceneryPool` flattens the G geometries' texels
into one texel array (E=1) and offsets each geometry's ``texel_starts``; only the small
per-line arrays (lines, counts, lights, starts) of the env's geometry are gathered per
env. With a single geometry even that gather is skipped.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from .. import core, modules, validation
from .. import scene as scene_builder
from ..arrdict import arrdict, dotdict
from ..state import Agents, Scenery, init_agents

__all__ = ["SceneRuntime", "SceneryPool", "plan_bounds"]


@struct.dataclass
class SceneryPool:
    """The scenery of G geometries, laid out to be shared by many one-env states.

    ``view(g)`` gives geometry g's Scenery with E=1 for the kernels. Its texels point into
    a single flattened texel array (all G geometries), so the big arrays are never indexed
    per env. ``scenery`` keeps the plain G-env Scenery for plotting.
    """

    scenery: Scenery          # G envs, as scene.scenery built it
    textures: jax.Array       # (1, G*T, 3) float32, every geometry's texels
    baked: jax.Array          # (1, G*T) float32
    offsets: jax.Array        # (G,) int32, g*T: where geometry g's texels start

    @classmethod
    def create(cls, scenery: Scenery) -> "SceneryPool":
        G, T = scenery.textures.shape[:2]
        return cls(scenery=scenery, textures=scenery.textures.reshape(1, G * T, 3),
                   baked=scenery.baked.reshape(1, G * T),
                   offsets=jnp.arange(G, dtype=jnp.int32) * T)

    @property
    def n_geometries(self) -> int:
        return self.scenery.lines.shape[0]

    @property
    def n_texels(self) -> int:
        """T, texels per geometry (padded)."""
        return self.scenery.textures.shape[1]

    def view(self, g) -> Scenery:
        """Geometry ``g``'s scenery as an E=1 Scenery (g an int32 scalar, may be traced)."""
        s = self.scenery
        if self.n_geometries == 1:  # static index: stays unbatched under vmap
            return s
        take = lambda x: jax.lax.dynamic_index_in_dim(x, g, 0, keepdims=True)
        # the scenery fields a kernel needs; any other (e.g. acceleration structures) per geometry
        return s.replace(
            lines=take(s.lines), n_lines=take(s.n_lines), lights=take(s.lights),
            n_lights=take(s.n_lights), textures=self.textures,
            texel_starts=take(s.texel_starts) + take(self.offsets)[:, None],
            texel_widths=take(s.texel_widths), baked=self.baked,
            **{f: take(getattr(s, f)) for f in _extra_fields(s)})

    def local(self, g) -> tuple[jax.Array, jax.Array]:
        """Geometry g's (texel_starts (L,), texel_widths (L,)) within its own T texels."""
        if self.n_geometries == 1:
            return self.scenery.texel_starts[0], self.scenery.texel_widths[0]
        take = lambda x: jax.lax.dynamic_index_in_dim(x, g, 0, keepdims=False)
        return take(self.scenery.texel_starts), take(self.scenery.texel_widths)


_BASE_FIELDS = ("lines", "n_lines", "lights", "n_lights", "textures", "texel_starts",
                "texel_widths", "baked", "model", "n_agents")


def _extra_fields(s: Scenery) -> list:
    """Scenery fields beyond the base ones that carry a leading env axis (gathered per geometry)."""
    G = s.lines.shape[0]
    out = []
    for f in getattr(s, "__dataclass_fields__", {}):
        if f in _BASE_FIELDS:
            continue
        v = getattr(s, f)
        if hasattr(v, "shape") and len(v.shape) >= 1 and v.shape[0] == G:
            out.append(f)
    return out


def plan_bounds(geometries: Sequence) -> np.ndarray:
    """(G, 2) float32: each plan's (width, height) in metres, from its mask."""
    return np.stack([np.array(g["masks"].shape[::-1], np.float32) * g["res"]
                     for g in geometries]).astype(np.float32)


def _one(tree):
    """Adds the kernels' env axis of 1."""
    return jax.tree_util.tree_map(lambda x: x[None], tree)


def _squeeze(tree):
    return jax.tree_util.tree_map(lambda x: x[0], tree)


class SceneRuntime:
    """Scenery, spawns, render and physics of one env set in one of G geometries.

    An env holds one (``self.scene = SceneRuntime(...)``) and calls its methods from its
    ``init``/``transition``/``observe``. Agents here have (A,) poses: angles (A,),
    positions (A, 2), angvelocity (A,), velocity (A, 2).

    Args:
        geometries: a non-empty list of geometry dotdicts (``toys``, ``floorplans``,
            ``cubicasa``).
        n_agents: A, agents per env.
        res: R, render resolution (pixels per view).
        subsample: pixels averaged per observation pixel; W = R // subsample.
        backend: "kernel" or "reference".
        seed: seeds the textures, lights and spawn points (fixed per runtime; episodes
            draw their randomness from the keys passed to the methods).
        n_spawns: precomputed spawn points per geometry and agent.
    """

    def __init__(self, geometries: Sequence, n_agents: int = 1, res: int = 64, subsample: int = 1,
                 backend: str = "kernel", seed: int = 0, n_spawns: int = 100):
        if isinstance(geometries, dict) or not isinstance(geometries, Sequence) or not geometries:
            raise ValueError("geometries: expected a non-empty list of geometries")
        self.n_agents = validation.positive_int("n_agents", n_agents)
        self.res = validation.positive_int("res", res)
        self.subsample = validation.positive_int("subsample", subsample)
        if res % subsample:
            raise ValueError(f"subsample: expected a divisor of res={res}, got {subsample}")
        self.backend = validation.one_of("backend", backend, core.BACKENDS)
        seed = validation.integer("seed", seed)
        n_spawns = validation.positive_int("n_spawns", n_spawns)
        self.geometries = list(geometries)
        k_scene, k_spawn = jax.random.split(jax.random.PRNGKey(seed))
        self.pool = SceneryPool.create(
            scene_builder.scenery(self.geometries, self.n_agents, k_scene, backend=backend))
        self.spawns = modules.RandomSpawns.create(self.geometries, self.n_agents, k_spawn, n_spawns)
        self.bounds = jnp.asarray(plan_bounds(self.geometries))  # (G, 2)
        self.width = res // subsample

    @property
    def n_geometries(self) -> int:
        """G."""
        return len(self.geometries)

    @property
    def n_texels(self) -> int:
        """T, wall texels per geometry (padded to the largest)."""
        return self.pool.n_texels

    def pick_geometry(self, key: jax.Array) -> jax.Array:
        """A geometry index drawn uniformly: int32 ()."""
        if self.n_geometries == 1:
            return jnp.zeros((), jnp.int32)
        return jax.random.randint(key, (), 0, self.n_geometries, jnp.int32)

    def spawn(self, key: jax.Array, geometry, agents: Optional[Agents] = None, where=True) -> Agents:
        """Agents at random spawn points of ``geometry``, at rest.

        Args:
            key: PRNG key.
            geometry: int32 () geometry index.
            agents: current agents (A,); None for fresh ones (every agent spawns).
            where: bool, broadcastable to (A,): which agents respawn.

        Returns:
            Agents with (A,) poses.
        """
        agents = _squeeze(init_agents(1, self.n_agents)) if agents is None else agents
        return self.spawns(key, agents, where, geometry)

    def render(self, geometry, agents: Agents, fov) -> arrdict:
        """Renders the agents' views in ``geometry``.

        Returns:
            arrdict laid out for the observation modules (``modules.unpack``): ``screen``
            (A, 3, 1, R), ``indices``, ``locations``, ``dots``, ``distances`` (A, 1, R).
        """
        r = modules.render(self.pool.view(geometry), _one(agents), self.res, fov, self.backend)
        return _squeeze(r)

    def physics(self, geometry, agents: Agents, fps) -> tuple[Agents, jax.Array]:
        """One physics step in ``geometry``: (moved agents, progress float32 (A,))."""
        moved, progress = core.physics(self.pool.view(geometry), _one(agents), fps=fps,
                                       backend=self.backend)
        return _squeeze(moved), progress[0]

    def texels(self, geometry, r: arrdict) -> jax.Array:
        """Wall texel (within ``geometry``'s T) under each rendered pixel, -1 off walls.

        Args:
            geometry: int32 ().
            r: a :meth:`render` result.

        Returns:
            int32 (A, R).
        """
        s = self.pool.scenery
        idx = r.indices[:, 0]
        j = jnp.maximum(idx, 0)
        g = 0 if self.n_geometries == 1 else geometry  # one gather per pixel, no per-env row copy
        w, start = s.texel_widths[g, j], s.texel_starts[g, j]
        k = jnp.minimum(jnp.floor(w * r.locations[:, 0]).astype(jnp.int32), w - 1)
        wall = (idx >= 8 * self.n_agents) & (w > 0)
        return jnp.where(wall, start + k, -1)

    def mark_seen(self, seen: jax.Array, geometry, r: arrdict) -> tuple[jax.Array, jax.Array]:
        """Marks the wall texels under the rendered pixels in a packed mask (one kernel call).

        Args:
            seen: int32 (ceil(T / 32),), packed as :func:`megastep_jax.core.pack_seen` (bit
                t % 32 of word t // 32 is texel t of ``geometry``).
            geometry: int32 ().
            r: a :meth:`render` result.

        Returns:
            (seen int32 (ceil(T / 32),), int32 () texels newly seen): the texels of
            :meth:`texels`, distinct ones counted once.
        """
        s = self.pool.scenery
        g = jnp.zeros((1,), jnp.int32) if self.n_geometries == 1 else jnp.asarray(geometry, jnp.int32)[None]
        render = core.Render(indices=r.indices[None, :, 0], locations=r.locations[None, :, 0],
                             dots=r.dots[None, :, 0], distances=r.distances[None, :, 0],
                             screen=None)
        words, new = core.mark_seen(seen[None], render, s.texel_starts, s.texel_widths, g,
                                    self.n_agents, backend=self.backend)
        return words[0], new[0]

    def n_texels_of(self, geometry: int) -> int:
        """The number of real (unpadded) texels of geometry ``geometry`` (host int)."""
        return int(np.asarray(self.pool.scenery.n_texels)[int(geometry)])

    def plot_state(self, geometry, agents: Agents, fov, **extra) -> dotdict:
        """One env's numpy plot state (see :mod:`megastep_jax.plotting`): its geometry's
        scenery, its agents' poses and ``fov``, plus ``extra`` keys (``obs``, ``seen``,
        ``bars``, ``hits``, ``text``)."""
        from .. import plotting  # deferred: matplotlib is only needed for plots

        g = int(np.asarray(jax.device_get(geometry)))
        s = self.pool.scenery
        one = s.replace(**{f: np.asarray(getattr(s, f))[g:g + 1]
                           for f in ("lines", "n_lines", "lights", "n_lights", "textures",
                                     "texel_starts", "texel_widths", "baked") + tuple(_extra_fields(s))})
        return plotting.core_state(one, _one(jax.device_get(agents)), e=0,
                                   fov=float(np.asarray(fov)), **extra)


def first_person_obs(rgb: Any, depth: Any, imu: Any, r: arrdict, agents: Agents, max_depth) -> arrdict:
    """megastep's first-person senses from one render: ``rgb``, depth ``d`` and ``imu``."""
    return arrdict(rgb=rgb(r), d=depth(r, max_depth), imu=imu(agents))
