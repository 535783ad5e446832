"""Scenery: geometries made into textured, lit, padded device arrays for the kernels.

``scenery(geometries, n_agents, key)`` gives each env its agents' model lines and its
walls, colours every line, patterns the wall texels, draws light intensities, pads the
batch to common shapes with per-env counts, and bakes the static lighting.

Host-side randomness is drawn from a numpy Generator seeded by the key's data, so the
same key gives the same scenery bit for bit.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import core, geometry as geom, reference, validation
from .ragged import RaggedNumpy
from .state import Scenery

MODEL_CORNERS = np.array(
    [[-.5, -1], [.5, -1], [1, -.5], [1, .5], [.5, 1], [-.5, 1], [-1, .5], [-1, -.5]], np.float32)
"""Corners of the octagonal agent model, in units of half the agent width."""

# megastep's agent_colors: matplotlib's '.25', 'g' and 'r', i.e. these display (gamma-encoded)
# values. Textures store them decoded (x**2.2), as megastep's init_textures does; plots encode.
_GREY, _GREEN, _RED = (.25, .25, .25), (0., .5, 0.), (1., 0., 0.)
MODEL_COLORS = np.array([_GREY, _GREEN, _GREY, _RED, _GREY, _RED, _GREY, _GREEN], np.float32)
"""(8, 3) display colour of each model line, in model-line order (megastep's values): grey
0.25 on the four straight sides, green (0, 0.5, 0) on the two diagonals of the agent's right
side, red (1, 0, 0) on the two of its left. The one definition: scenery decodes these into
textures and :mod:`megastep_jax.plotting` draws them."""

WALL_PALETTE = np.array(
    [[int(h[i:i + 2], 16) / 255 for i in (1, 3, 5)] for h in
     ["#c185ae", "#73a171", "#5666a4", "#9f7c4a", "#809cd5", "#566e40", "#8e537b", "#4f9fa4",
      "#b56d66", "#5a728c"]], np.float32)
"""Muted wall colours, cycled by wall index."""

LIGHT_INTENSITY = (0.5, 2.0)
PATTERN_STEP = 0.5
"""Mean distance in metres between jumps in the wall pattern."""


def agent_model(width: float = core.AGENT_WIDTH) -> np.ndarray:
    """The (8, 2, 2) model lines, in the agent frame, facing +x."""
    return geom.cyclic_pairs(MODEL_CORNERS * (width / 2)).astype(np.float32)


def rng_from_key(key: jax.Array) -> np.random.Generator:
    """A numpy Generator seeded by a jax PRNG key's data, for host-side draws."""
    if not isinstance(key, jax.Array):
        raise ValueError(f"key: expected a jax PRNG key, got {type(key).__name__}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        data = jax.random.key_data(key)
    elif key.dtype == jnp.uint32 and key.shape == (2,):
        data = key
    else:
        raise ValueError(f"key: expected a jax PRNG key (jax.random.key or PRNGKey), got "
                         f"dtype {key.dtype} shape {key.shape}")
    return np.random.default_rng(np.asarray(data, np.uint32).ravel().tolist())


def texel_counts(lines: np.ndarray) -> np.ndarray:
    """Texels per line: ceil(length / TEXEL_SIZE); 0 for a zero-length line."""
    lengths = np.linalg.norm(lines[:, 1] - lines[:, 0], axis=-1)
    return np.ceil(lengths / core.TEXEL_SIZE - 1e-6).clip(0).astype(np.int32)


def wall_pattern(n: int, rng: np.random.Generator) -> np.ndarray:
    """A (n,) texel pattern in [0.5, 1): random jumps along the wall, for depth cues."""
    jumps = rng.binomial(1, core.TEXEL_SIZE / PATTERN_STEP, n) * rng.standard_normal(n)
    return (0.5 + 0.5 * np.mod(np.cumsum(jumps), 1.0)).astype(np.float32)


def _env_arrays(g, n_agents: int, rng: np.random.Generator):
    model = agent_model()
    walls = np.asarray(g.walls, np.float32).reshape(-1, 2, 2)
    lines = np.concatenate([np.tile(model, (n_agents, 1, 1)), walls])
    widths = texel_counts(lines)
    n_agent_texels = int(widths[:8 * n_agents].sum())
    colours = np.concatenate([np.tile(MODEL_COLORS, (n_agents, 1)),
                              WALL_PALETTE[np.arange(len(walls)) % len(WALL_PALETTE)]])
    texels = np.repeat(core.gamma_decode(colours), widths, axis=0)
    pattern = np.concatenate([np.ones(n_agent_texels, np.float32),
                              wall_pattern(len(texels) - n_agent_texels, rng)])
    textures = texels * pattern[:, None]
    lights = np.asarray(g.lights, np.float32).reshape(-1, 2)
    intensity = rng.uniform(*LIGHT_INTENSITY, len(lights)).astype(np.float32)
    return lines, widths, textures, np.concatenate([lights, intensity[:, None]], 1)


GRID_CELLS_PER_WALL = 1.0
"""Grid cells per wall (before the per-axis cap): the cell size is chosen so that an env of
M walls gets about this many cells per wall over its walls' bounding box."""
GRID_MAX_DIM = 256
"""Most cells along either axis of a grid."""
GRID_PAD = reference.GRID_PAD
"""A wall is listed in every cell it comes within this many cell sizes of (csrc/megastep.h
kGridPad): hit points computed with rounding stay in a cell that lists their wall."""


def _env_grid(walls: np.ndarray, first: int, cells_per_wall: float):
    """One env's grid over ``walls`` (M, 2, 2), whose line indices start at ``first``.

    Returns:
        (offsets (nx*ny + 1,) int32, entries (K,) int32, origin (3,) float32, dims (2,) int32).
    """
    M = len(walls)
    if M == 0:
        return np.zeros(1, np.int32), np.zeros(0, np.int32), np.zeros(3, np.float32), np.zeros(2, np.int32)
    w = walls.astype(np.float64)
    lo, hi = w.reshape(-1, 2).min(0), w.reshape(-1, 2).max(0)
    size = np.maximum(hi - lo, 1e-6)
    # slack for float32 rounding at these coordinates (far more than an ulp)
    slack = 1e-5 * float(np.abs(w).max()) + 1e-6
    cs = float(np.sqrt(size[0] * size[1] / max(1.0, cells_per_wall * M)))
    cs = float(np.float32(max(cs, float(size.max()) / GRID_MAX_DIM * (1 + 1e-6), slack, 1e-4)))
    pad = GRID_PAD * cs + slack
    # float32 origin, as the kernel reads it; the box covers every wall with room to spare
    origin = (lo - 2 * pad).astype(np.float32).astype(np.float64)
    dims = np.maximum(np.ceil((hi + 2 * pad - origin) / cs), 1).astype(np.int64)
    nx, ny = int(dims[0]), int(dims[1])
    # candidate cells: each wall's padded bounding box
    a, b = w[:, 0], w[:, 1]
    cmin = np.clip(np.floor((np.minimum(a, b) - pad - origin) / cs), 0, dims - 1).astype(np.int64)
    cmax = np.clip(np.floor((np.maximum(a, b) + pad - origin) / cs), 0, dims - 1).astype(np.int64)
    span = cmax - cmin + 1
    count = span[:, 0] * span[:, 1]
    wall = np.repeat(np.arange(M), count)
    k = np.arange(len(wall)) - np.repeat(np.cumsum(count) - count, count)
    ix = cmin[wall, 0] + k % span[wall, 0]
    iy = cmin[wall, 1] + k // span[wall, 0]
    # keep cells whose padded box the wall's line passes through (the box corners are not
    # all on one side of it); a zero-length wall keeps its bounding box's cells
    d = b - a
    n = np.stack([-d[:, 1], d[:, 0]], 1) / np.maximum(np.linalg.norm(d, axis=1), 1e-30)[:, None]
    x0 = origin[0] + ix * cs - pad
    y0 = origin[1] + iy * cs - pad
    x1, y1 = x0 + cs + 2 * pad, y0 + cs + 2 * pad
    ax, ay = a[wall, 0], a[wall, 1]
    nx_, ny_ = n[wall, 0], n[wall, 1]
    side = np.stack([(x - ax) * nx_ + (y - ay) * ny_ for x, y in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))])
    keep = (side.min(0) <= pad) & (side.max(0) >= -pad)
    cell = (iy * nx + ix)[keep]
    line = wall[keep] + first
    order = np.lexsort((line, cell))
    cell, line = cell[order], line[order]
    offsets = np.searchsorted(cell, np.arange(nx * ny + 1)).astype(np.int32)
    return (offsets, line.astype(np.int32), np.array([origin[0], origin[1], cs], np.float32),
            np.array([nx, ny], np.int32))


def build_grid(scenery: Scenery, cells_per_wall: float = GRID_CELLS_PER_WALL) -> Scenery:
    """Builds the acceleration grid over each env's walls (host-side numpy).

    :func:`scenery` calls this; call it on a Scenery made by hand, or after changing its
    lines, to render it through the grid (without one the kernels cast every line, with
    the same result).

    Args:
        scenery: a Scenery with concrete arrays.
        cells_per_wall: about how many cells per wall, a positive float.

    Returns:
        The scenery with ``grid_cells``, ``grid_lines``, ``grid_origin`` and ``grid_dims``.
    """
    validation.scalar_in_range("cells_per_wall", cells_per_wall, 0.0, 1e6)
    if not isinstance(scenery, Scenery):
        raise ValueError(f"scenery: expected a megastep_jax Scenery, got {type(scenery).__name__}")
    lines = np.asarray(scenery.lines, np.float32)
    n_lines = np.asarray(scenery.n_lines)
    first = 8 * scenery.n_agents
    grids = [_env_grid(lines[e, first:max(first, int(n_lines[e]))], first, cells_per_wall)
             for e in range(len(lines))]
    offsets, entries, origins, dims = zip(*grids)
    C = max(len(o) for o in offsets)
    K = max(max(len(x) for x in entries), 1)
    cells = np.stack([np.concatenate([o, np.full(C - len(o), o[-1], np.int32)]) for o in offsets])
    return scenery.replace(grid_cells=jnp.asarray(cells), grid_lines=jnp.asarray(_pad(entries, K)),
                           grid_origin=jnp.asarray(np.stack(origins)), grid_dims=jnp.asarray(np.stack(dims)))


def _pad(xs: Sequence[np.ndarray], length: int, fill=0) -> np.ndarray:
    out = np.full((len(xs), length) + xs[0].shape[1:], fill, xs[0].dtype)
    for i, x in enumerate(xs):
        out[i, :len(x)] = x
    return out


def scenery(geometries: Sequence, n_agents: int = 1, key: jax.Array | None = None,
            backend: str = "kernel") -> Scenery:
    """Builds the scenery of one env per geometry, textured, lit and baked.

    Args:
        geometries: a non-empty sequence of geometries (see :mod:`megastep_jax.geometry`).
        n_agents: agents per env, a positive int.
        key: a jax PRNG key for the textures and light intensities.
        backend: "kernel" or "reference", for the bake.

    Returns:
        Scenery with E = len(geometries) envs, padded to the largest.

    Raises:
        ValueError: on an empty or malformed geometry list, a bad n_agents or key.
    """
    if key is None:
        raise ValueError("key: expected a jax PRNG key, e.g. jax.random.key(0); got None")
    if isinstance(geometries, dict) or not isinstance(geometries, Sequence) or len(geometries) == 0:
        raise ValueError("geometries: expected a non-empty list of geometries")
    if isinstance(n_agents, bool) or not isinstance(n_agents, int) or n_agents <= 0:
        raise ValueError(f"n_agents: expected a positive int, got {n_agents!r}")
    rng = rng_from_key(key)
    per_env = []
    for i, g in enumerate(geometries):
        try:
            g = geom.validate(g)
        except ValueError as e:
            raise ValueError(f"geometries[{i}]: {e}") from None
        per_env.append(_env_arrays(g, n_agents, rng))
    lines, widths, textures, lights = zip(*per_env)
    L = max(len(x) for x in lines)
    T = max(max(len(x) for x in textures), 1)
    NL = max(max(len(x) for x in lights), 1)
    starts = [RaggedNumpy(t, w).starts.astype(np.int32) for t, w in zip(textures, widths)]
    s = Scenery(
        lines=jnp.asarray(_pad(lines, L)),
        n_lines=jnp.asarray([len(x) for x in lines], jnp.int32),
        lights=jnp.asarray(_pad(lights, NL)),
        n_lights=jnp.asarray([len(x) for x in lights], jnp.int32),
        textures=jnp.asarray(_pad([t if len(t) else np.zeros((0, 3), np.float32) for t in textures], T)),
        texel_starts=jnp.asarray(_pad(starts, L)),
        texel_widths=jnp.asarray(_pad(widths, L)),
        baked=jnp.ones((len(lines), T), jnp.float32),
        model=jnp.asarray(agent_model()),
        n_agents=n_agents,
    )
    return core.bake(build_grid(s), backend=backend)


def texels(scenery: Scenery, env: int) -> RaggedNumpy:
    """The texel colours of one env as a Ragged over its real lines (numpy).

    ``texels(s, e)[j]`` is the (w, 3) texture of line j of env e.
    """
    n = int(scenery.n_lines[env])
    widths = np.asarray(scenery.texel_widths[env, :n])
    return RaggedNumpy(np.asarray(scenery.textures[env, :int(widths.sum())]), widths)
