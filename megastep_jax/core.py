"""The public core: constants, gamma, agent state and the kernel entry points.

``render``, ``physics``, ``bake`` and ``mark_seen`` validate their inputs in Python, then call either the
compiled kernels (``backend="kernel"``, the default), their pure-jnp twins
(``backend="reference"``), or the CUDA kernels run on the CPU by an emulation of CUDA
(``backend="cuda-emulated"``: slow, for testing the CUDA file's launch code). They work
under ``jit``, ``vmap`` (nested too, and over fov, fps, radius or restitution with the
scenery unbatched) and ``lax.scan``.

Validation of values (finite, positive coordinates, fov in (0, 180), ...) runs where the
values are concrete; under ``jit`` only shapes and dtypes can be checked, and a kernel
given an fov outside (0, 180) returns NaN outputs rather than clipping it.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import reference, validation
from .state import Agents, Render, Scenery, init_agents

AGENT_WIDTH = 0.15
"""Width of an agent's model in metres."""
AGENT_RADIUS = AGENT_WIDTH / math.sqrt(2)
"""Radius of the collision disc and of the camera's near plane, in metres."""
TEXEL_SIZE = 0.05
"""Length of a texel in metres."""
AMBIENT = reference.AMBIENT
LUMINANCE = reference.LUMINANCE
MAX_RES = 4096
"""Largest horizontal resolution accepted by render."""
DEFAULT_RES, DEFAULT_FOV, DEFAULT_FPS = 64, 130.0, 10.0
BACKENDS = ("kernel", "reference", "cuda-emulated")
COLLISIONS = tuple(reference.COLLISIONS)

__all__ = ["AGENT_WIDTH", "AGENT_RADIUS", "TEXEL_SIZE", "AMBIENT", "LUMINANCE", "gamma_encode",
           "gamma_decode", "init_agents", "render", "physics", "bake", "mark_seen", "pack_seen",
           "unpack_seen", "seen_words", "Agents", "Render", "Scenery"]


def gamma_encode(x):
    """Converts linear RGB to viewable values: ``x ** (1/2.2)``."""
    return x ** (1 / 2.2)


def gamma_decode(x):
    """Converts viewable RGB to linear, interpolatable values: ``x ** 2.2``."""
    return x ** 2.2


# ---------------------------------------------------------------------------------------
# Validation

def validate_scenery(scenery: Any) -> None:
    """Checks a Scenery's shapes and dtypes are consistent; raises ValueError otherwise."""
    if not isinstance(scenery, Scenery):
        raise ValueError(f"scenery: expected a megastep_jax Scenery, got {type(scenery).__name__}")
    s = scenery
    validation.array("scenery.lines", s.lines, "f", 4)
    E, L = s.lines.shape[:2]
    if s.lines.shape[2:] != (2, 2):
        raise ValueError(f"scenery.lines: expected shape (E, L, 2, 2), got {tuple(s.lines.shape)}")
    validation.array("scenery.lights", s.lights, "f", 3)
    validation.array("scenery.textures", s.textures, "f", 3)
    validation.array("scenery.baked", s.baked, "f", 2)
    validation.array("scenery.model", s.model, "f", 3)
    for name in ("n_lines", "n_lights"):
        validation.array(f"scenery.{name}", getattr(s, name), "i", 1)
    for name in ("texel_starts", "texel_widths"):
        validation.array(f"scenery.{name}", getattr(s, name), "i", 2)
    T = s.textures.shape[1]
    expected = {
        "n_lines": (E,), "n_lights": (E,), "lights": (E, s.lights.shape[1], 3),
        "textures": (E, T, 3), "baked": (E, T), "texel_starts": (E, L), "texel_widths": (E, L),
        "model": (8, 2, 2),
    }
    for name, shape in expected.items():
        got = tuple(getattr(s, name).shape)
        if got != shape:
            raise ValueError(f"scenery.{name}: expected shape {shape}, got {got}")
    if L < 8 * s.n_agents:
        raise ValueError(f"scenery.lines: expected at least {8 * s.n_agents} lines for "
                         f"{s.n_agents} agents' models, got {L}")
    _validate_grid(s)
    if validation.is_concrete(s.n_lines) and validation.is_concrete(s.n_lights):
        n_lines, n_lights = np.asarray(s.n_lines), np.asarray(s.n_lights)
        if np.any(n_lines < 8 * s.n_agents) or np.any(n_lines > L):
            raise ValueError(f"scenery.n_lines: expected counts in [{8 * s.n_agents}, {L}]")
        if np.any(n_lights < 0) or np.any(n_lights > s.lights.shape[1]):
            raise ValueError(f"scenery.n_lights: expected counts in [0, {s.lights.shape[1]}]")


def _validate_grid(s: Scenery) -> None:
    """The acceleration grid's fields: all or none, shapes and dtypes; entries where concrete."""
    present = [f for f in Scenery.GRID_FIELDS if getattr(s, f) is not None]
    if not present:
        return
    if len(present) != len(Scenery.GRID_FIELDS):
        missing = sorted(set(Scenery.GRID_FIELDS) - set(present))
        raise ValueError(f"scenery.{missing[0]}: the grid fields come together (build them with "
                         f"scene.build_grid, or drop them all with scenery.without_grid())")
    E, L = s.lines.shape[:2]
    for name, kind in (("grid_cells", "i"), ("grid_lines", "i"), ("grid_origin", "f"), ("grid_dims", "i")):
        validation.array(f"scenery.{name}", getattr(s, name), kind, 2)
        if getattr(s, name).shape[0] != E:
            raise ValueError(f"scenery.{name}: expected {E} envs, got shape {tuple(getattr(s, name).shape)}")
    if s.grid_cells.shape[1] < 1:
        raise ValueError("scenery.grid_cells: expected at least one offset per env")
    for name, n in (("grid_origin", 3), ("grid_dims", 2)):
        if getattr(s, name).shape[1] != n:
            raise ValueError(f"scenery.{name}: expected shape ({E}, {n}), got {tuple(getattr(s, name).shape)}")
    if all(validation.is_concrete(getattr(s, f)) for f in Scenery.GRID_FIELDS):
        cells, entries = np.asarray(s.grid_cells), np.asarray(s.grid_lines)
        dims, origin = np.asarray(s.grid_dims).astype(np.int64), np.asarray(s.grid_origin)
        C, K = cells.shape[1] - 1, entries.shape[1]
        if np.any(dims < 0) or np.any(dims.prod(1) > C):
            raise ValueError(f"scenery.grid_dims: expected nx, ny >= 0 with nx * ny <= {C} cells")
        if np.any(np.diff(cells, axis=1) < 0) or np.any(cells < 0) or np.any(cells > K):
            raise ValueError(f"scenery.grid_cells: expected non-decreasing offsets in [0, {K}]")
        listed = np.arange(K)[None] < cells[:, -1:]
        if np.any(listed & ((entries < 8 * s.n_agents) | (entries >= L))):
            raise ValueError(f"scenery.grid_lines: expected wall indices in [{8 * s.n_agents}, {L})")
        used = dims.prod(1) > 0
        if not np.all(np.isfinite(origin[used])) or np.any(origin[used, 2] <= 0):
            raise ValueError("scenery.grid_origin: expected finite (x0, y0) and a positive cell size")


def validate_agents(agents: Any, scenery: Scenery, check_positions: bool = True) -> None:
    """Checks agents match the scenery's envs and agents; positions finite and positive."""
    if not isinstance(agents, Agents):
        raise ValueError(f"agents: expected a megastep_jax Agents, got {type(agents).__name__}")
    validation.array("agents.angles", agents.angles, "f", 2)
    E, A = agents.angles.shape
    want = {"positions": (E, A, 2), "velocity": (E, A, 2), "angvelocity": (E, A)}
    for name, shape in want.items():
        x = getattr(agents, name)
        validation.array(f"agents.{name}", x, "f")
        if tuple(x.shape) != shape:
            raise ValueError(f"agents.{name}: expected shape {shape}, got {tuple(x.shape)}")
    if E != scenery.n_envs:
        raise ValueError(f"agents: {E} envs where the scenery has {scenery.n_envs}")
    if A != scenery.n_agents:
        raise ValueError(f"agents: {A} agents per env where the scenery was built for {scenery.n_agents}")
    if check_positions:
        validation.finite_positive("agents.positions", agents.positions)
    for name in ("angles", "velocity", "angvelocity"):
        x = getattr(agents, name)
        if validation.is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
            raise ValueError(f"agents.{name}: expected finite values, found NaN or inf")


def _check_backend(backend: str) -> None:
    validation.one_of("backend", backend, BACKENDS)
    if backend == "kernel":
        from . import kernels

        kernels.require()
    elif backend == "cuda-emulated":
        from . import kernels

        kernels.require_emulated()


def _as_f32(scenery: Scenery) -> Scenery:
    return scenery.replace(
        lines=jnp.asarray(scenery.lines, jnp.float32), lights=jnp.asarray(scenery.lights, jnp.float32),
        textures=jnp.asarray(scenery.textures, jnp.float32), baked=jnp.asarray(scenery.baked, jnp.float32),
        model=jnp.asarray(scenery.model, jnp.float32), n_lines=jnp.asarray(scenery.n_lines, jnp.int32),
        n_lights=jnp.asarray(scenery.n_lights, jnp.int32),
        texel_starts=jnp.asarray(scenery.texel_starts, jnp.int32),
        texel_widths=jnp.asarray(scenery.texel_widths, jnp.int32),
        **({} if not scenery.has_grid else dict(
            grid_cells=jnp.asarray(scenery.grid_cells, jnp.int32),
            grid_lines=jnp.asarray(scenery.grid_lines, jnp.int32),
            grid_origin=jnp.asarray(scenery.grid_origin, jnp.float32),
            grid_dims=jnp.asarray(scenery.grid_dims, jnp.int32))))


def _agents_f32(agents: Agents) -> Agents:
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), agents)


# ---------------------------------------------------------------------------------------
# Entry points

def render(scenery: Scenery, agents: Agents, res: int = DEFAULT_RES, fov=DEFAULT_FOV,
           radius=AGENT_RADIUS, backend: str = "kernel") -> Render:
    """Renders the scenery onto every agent's camera.

    The agents' models are drawn at their poses inside the call. Rays are cast through
    ``res`` pixels spread over ``fov`` degrees, pixel 0 leftmost; the near plane is at
    ``radius``.

    Args:
        scenery: Scenery of E envs built for A agents.
        agents: Agents with (E, A) poses, positions strictly positive.
        res: horizontal resolution R, a static int in [1, MAX_RES].
        fov: field of view in degrees, in (0, 180); an array operand, so vmappable.
        radius: near-plane distance in metres, >= 0; an array operand.
        backend: "kernel" (compiled), "reference" (pure jnp) or "cuda-emulated" (the CUDA
            kernels on the CPU, for testing them).

    Returns:
        Render with indices, locations, dots, distances (E, A, R) and screen (E, A, R, 3).
        Where a ray hits nothing: index -1, location and dot 0, distance inf, black.
    """
    if not isinstance(res, numbers.Integral) or isinstance(res, bool) or not 1 <= res <= MAX_RES:
        raise ValueError(f"res: expected a static int in [1, {MAX_RES}], got {res!r}")
    validation.scalar_in_range("fov", fov, 0.0, 180.0)
    validation.scalar_in_range("radius", radius, 0.0, 1e3, lo_open=False)
    validate_scenery(scenery)
    validate_agents(agents, scenery)
    _check_backend(backend)
    scenery, agents = _as_f32(scenery), _agents_f32(agents)
    if backend == "reference":
        return reference.render(scenery, agents, int(res), fov, radius)
    from . import kernels

    return kernels.render(scenery, agents, int(res), fov, radius, backend)


def physics(scenery: Scenery, agents: Agents, fps=DEFAULT_FPS, radius=AGENT_RADIUS,
            collision: str = "stop", restitution=1.0, backend: str = "kernel"):
    """Moves every agent by velocity/fps for one step, resolving its contacts in time order.

    Agents are discs of ``radius`` moving uniformly through the step. Each env's step is
    simulated as a sequence of contact events, earliest first, each found along the paths
    the agents really take (others moving until they stop or turn, then from there): an
    agent's contact with a wall (megastep's candidates, SPEC.md Physics, contact distance
    1.001 ``radius``) or two agents' contact (1.001 * 2 ``radius``). An event happens at
    megastep's 0.99 of the way to the contact over the agent's current straight segment
    (from the step's start: 0.99 times the contact's fraction, as megastep). So no agent
    comes within ``radius`` of a wall, or within 2 ``radius`` of another agent, at any time
    of the step (agents that start closer aside), and any number of agents is handled.

    - ``"stop"`` (default, megastep): an agent stops at its first contact, velocity and
      angular velocity zeroed, within 1% of its motion of its first contact with a wall or
      with where the other agents really are (a stopped one at rest). Of two moving agents
      that meet, the one heading faster into the other stops; the other runs on and stops
      when its own path meets the resting disc, if it does (an agent hit from behind or
      the side runs on). An agent alone among walls gets megastep's progress, except where
      megastep's crossing and side rules stopped it short of a wall's end.
    - ``"slide"``: at each contact the velocity's component into the contact normal is
      removed, and the agent goes on with the rest of the step; ``"bounce"``: it is
      reflected, times ``restitution``. Two moving agents get equal and opposite impulses
      from their relative velocity (equal masses): momentum is kept, and kinetic energy
      too at ``restitution`` 1. Turning is not obstructed. Under both, a contact (with a
      wall or another agent) counts only where the motion heads into it by more than
      ``reference.APPROACH`` (1e-5) of its length, so that an agent sliding along a wall or
      another agent is not stopped by the rounding left of its normal velocity.
    - Bound: at most 8 contacts per agent per step (``reference.MAX_CONTACTS``). An agent
      past it rests for the rest of the step, keeping its velocity, and so does an agent
      that then meets it (no impulse); this happens to clusters pressed together and to
      discs in sharp wedges of walls. A step costs O(events * A^2) per env.

    Args:
        scenery: Scenery of E envs built for A agents.
        agents: Agents with (E, A) poses and velocities.
        fps: steps per second, > 0; an array operand, so vmappable.
        radius: agent disc radius in metres, >= 0.
        collision: "stop", "slide" or "bounce", as above.
        restitution: in [0, 1], used by "bounce".
        backend: "kernel", "reference" or "cuda-emulated".

    Returns:
        (agents, progress): the moved agents and (E, A) float32 progress in [0, 1], the
        time of the agent's first contact in the step (the fraction of its intended motion
        made before it); 1 means no contact.
    """
    validation.scalar_in_range("fps", fps, 0.0, 1e6)
    validation.scalar_in_range("radius", radius, 0.0, 1e3, lo_open=False)
    validation.scalar_in_range("restitution", restitution, 0.0, 1.0, lo_open=False, hi_open=False)
    validation.one_of("collision", collision, COLLISIONS)
    validate_scenery(scenery)
    validate_agents(agents, scenery)
    _check_backend(backend)
    scenery, agents = _as_f32(scenery), _agents_f32(agents)
    if backend == "reference":
        return reference.physics(scenery, agents, fps, radius, collision, restitution)
    from . import kernels

    return kernels.physics(scenery, agents, fps, radius, collision, restitution, backend)


def bake(scenery: Scenery, backend: str = "kernel") -> Scenery:
    """Pre-computes the lighting of every static texel into ``scenery.baked``.

    Agent texels and padding get 1; agent texels are lit per hit at render time.
    """
    validate_scenery(scenery)
    _check_backend(backend)
    scenery = _as_f32(scenery)
    if backend == "reference":
        return reference.bake(scenery)
    from . import kernels

    return kernels.bake(scenery, backend)


# ---------------------------------------------------------------------------------------
# Seen texels: packed per-env masks of the wall texels that rendered pixels have shown

def seen_words(n_texels: int) -> int:
    """Words of a packed mask of ``n_texels`` texels: ceil(n_texels / 32)."""
    return -(-validation.nonnegative_int("n_texels", n_texels) // 32)


def pack_seen(mask) -> jax.Array:
    """Packs a bool mask ``(..., T)`` into int32 words ``(..., ceil(T / 32))``: texel t is
    bit t % 32 of word t // 32 (the layout :func:`mark_seen` reads and writes)."""
    mask = jnp.asarray(validation.array("mask", mask, "b"))
    T = mask.shape[-1]
    W = seen_words(T)
    padded = jnp.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, 32 * W - T)])
    bits = padded.reshape(*mask.shape[:-1], W, 32).astype(jnp.uint32) << jnp.arange(32, dtype=jnp.uint32)
    return jax.lax.bitcast_convert_type(jnp.sum(bits, axis=-1, dtype=jnp.uint32), jnp.int32)


def unpack_seen(words, n_texels: int) -> jax.Array:
    """The bool mask ``(..., n_texels)`` of packed int32 words ``(..., W)``."""
    words = jnp.asarray(validation.array("words", words, "i"))
    n_texels = validation.nonnegative_int("n_texels", n_texels)
    if 32 * words.shape[-1] < n_texels:
        raise ValueError(f"n_texels: expected at most {32 * words.shape[-1]} for {words.shape[-1]} "
                         f"words, got {n_texels}")
    bits = jax.lax.bitcast_convert_type(words.astype(jnp.int32), jnp.uint32)[..., None]
    mask = ((bits >> jnp.arange(32, dtype=jnp.uint32)) & 1).astype(bool)
    return mask.reshape(*words.shape[:-1], -1)[..., :n_texels]


def mark_seen(seen, render: Render, texel_starts, texel_widths, geometry, n_agents: int,
              backend: str = "kernel"):
    """Marks the static-wall texels under rendered pixels and counts the newly marked ones.

    Explorer's reward in one call: the texel under a pixel that shows a static line j at
    fraction ``location`` is ``texel_starts[g, j] + min(floor(texel_widths[g, j] *
    location), texel_widths[g, j] - 1)`` of the env's geometry g. Misses, the agents'
    lines (below ``8 * n_agents``), lines without texels and texels outside the mask mark
    nothing. A texel shown by several pixels counts once.

    Args:
        seen: int32 (E, W) packed masks (:func:`pack_seen`): bit t % 32 of word t // 32 is
            texel t.
        render: a :class:`Render` of the E envs (``indices`` and ``locations`` (E, A, R)
            are read).
        texel_starts, texel_widths: int32 (G, L), the texel tables of G geometries (a
            Scenery's, one row per geometry).
        geometry: int32 (E,), each env's row of the tables; rows outside [0, G) mark nothing.
        n_agents: A, a static int >= 0.
        backend: "kernel", "reference" or "cuda-emulated".

    Returns:
        (seen, new): int32 (E, W) masks with those texels set; int32 (E,) the number of
        distinct texels set that were not set before.
    """
    n_agents = validation.nonnegative_int("n_agents", n_agents)
    seen = validation.array("seen", seen, "i", 2)
    E, W = seen.shape
    for name in ("indices", "locations"):
        x = validation.array(f"render.{name}", getattr(render, name), "i" if name == "indices" else "f", 3)
        if x.shape[0] != E:
            raise ValueError(f"render.{name}: expected {E} envs (seen's first axis), got shape {tuple(x.shape)}")
    validation.shape("render.locations", render.locations, render.indices.shape)
    validation.array("texel_starts", texel_starts, "i", 2)
    validation.array("texel_widths", texel_widths, "i", 2)
    validation.shape("texel_widths", texel_widths, texel_starts.shape)
    validation.array("geometry", geometry, "i", 1)
    validation.shape("geometry", geometry, (E,))
    _check_backend(backend)
    i32 = lambda x: jnp.asarray(x, jnp.int32)
    args = (i32(seen), i32(render.indices), jnp.asarray(render.locations, jnp.float32), i32(geometry),
            i32(texel_starts), i32(texel_widths))
    if backend == "reference":
        return reference.seen(*args, n_agents)
    from . import kernels

    return kernels.seen(*args, n_agents, backend)
