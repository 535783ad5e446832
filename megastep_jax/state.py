"""The pytrees the kernels read and write: Scenery, Agents and Render.

Every array has a leading env axis E. A batch of envs with different geometries is padded
to common shapes; per-env counts say which entries are real, and kernels loop only over
those. Field names follow megastep.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Scenery:
    """The static and textured world of E envs, as the kernels read it.

    Lines of env e: the first ``n_agents * 8`` are the agents' models (agent a owns lines
    ``8a .. 8a+7``; their stored coordinates are unused, the kernels draw them from
    ``model`` and the agents' poses), then its walls, then padding up to L.
    Texels of line j of env e are ``textures[e, texel_starts[e, j] : + texel_widths[e, j]]``.

    The ``grid_*`` fields are an acceleration structure over each env's walls, built with
    them by :func:`megastep_jax.scene.scenery` (or :func:`megastep_jax.scene.build_grid`
    for a hand-made Scenery): a uniform grid of ``nx * ny`` square cells of side ``cs``
    from ``(x0, y0)``; cell ``c = iy * nx + ix`` lists, in
    ``grid_lines[e, grid_cells[e, c] : grid_cells[e, c + 1]]``, every wall that comes
    within a thousandth of a cell of it. The render kernel walks it front to back, so a
    ray meets the walls near it only; the result equals casting every line. Without a grid
    (the fields None, or ``nx == 0`` for an env) every wall is cast. A grid describes the
    walls it was built from: after changing ``lines`` build it again.
    """

    lines: jax.Array         # (E, L, 2, 2) float32, endpoints in metres
    n_lines: jax.Array       # (E,) int32, n_agents*8 + walls of env e
    lights: jax.Array        # (E, NL, 3) float32, (x, y, intensity)
    n_lights: jax.Array      # (E,) int32
    textures: jax.Array      # (E, T, 3) float32, gamma-decoded texel colours
    texel_starts: jax.Array  # (E, L) int32
    texel_widths: jax.Array  # (E, L) int32, 0 on padding lines
    baked: jax.Array         # (E, T) float32, static texel lighting (1 on agent texels)
    model: jax.Array         # (8, 2, 2) float32, agent model lines in the agent frame
    n_agents: int = struct.field(pytree_node=False, default=1)
    grid_cells: jax.Array | None = None   # (E, C + 1) int32, cell c's entries start
    grid_lines: jax.Array | None = None   # (E, K) int32, line indices, cell after cell
    grid_origin: jax.Array | None = None  # (E, 3) float32, (x0, y0, cs) in metres
    grid_dims: jax.Array | None = None    # (E, 2) int32, (nx, ny); (0, 0): no grid

    GRID_FIELDS = ("grid_cells", "grid_lines", "grid_origin", "grid_dims")

    @property
    def has_grid(self) -> bool:
        """Whether the acceleration grid fields are present."""
        return self.grid_cells is not None

    def without_grid(self) -> "Scenery":
        """This scenery with the grid fields dropped: the kernels then cast every line."""
        return self.replace(**{f: None for f in self.GRID_FIELDS})

    ENV_FIELDS = ("lines", "n_lines", "lights", "n_lights", "textures", "texel_starts",
                  "texel_widths", "baked")

    def take(self, envs) -> "Scenery":
        """The sceneries of the envs ``envs`` (int (E',)): every per-env field, grid included."""
        fields = self.ENV_FIELDS + (self.GRID_FIELDS if self.has_grid else ())
        envs = jnp.asarray(envs)
        return self.replace(**{f: jnp.take(getattr(self, f), envs, axis=0) for f in fields})

    @property
    def n_envs(self) -> int:
        return self.lines.shape[-4]

    @property
    def n_texels(self) -> jax.Array:
        """(E,) int32: texels in use per env."""
        return jnp.sum(self.texel_widths, axis=-1)


@struct.dataclass
class Agents:
    """Poses and motion of the agents of E envs; A agents per env."""

    angles: jax.Array       # (E, A) float32, degrees counter-clockwise from +x, in [-180, 180)
    positions: jax.Array    # (E, A, 2) float32, metres
    angvelocity: jax.Array  # (E, A) float32, degrees per second
    velocity: jax.Array     # (E, A, 2) float32, metres per second, global frame

    @property
    def n_envs(self) -> int:
        return self.angles.shape[-2]

    @property
    def n_agents(self) -> int:
        return self.angles.shape[-1]


@struct.dataclass
class Render:
    """What each agent's camera sees, one value per pixel (pixel 0 is the leftmost)."""

    indices: jax.Array    # (E, A, R) int32, line hit, -1 where the ray hits nothing
    locations: jax.Array  # (E, A, R) float32, fraction t along the line hit
    dots: jax.Array       # (E, A, R) float32, cosine between ray and line
    distances: jax.Array  # (E, A, R) float32, metres from the camera to the hit
    screen: jax.Array     # (E, A, R, 3) float32, gamma-decoded colour, black on no hit


def init_agents(n_envs: int, n_agents: int) -> Agents:
    """Agents at the origin, facing +x, at rest. Move them before rendering.

    Args:
        n_envs: E, a positive int.
        n_agents: A, a positive int.
    """
    for name, v in (("n_envs", n_envs), ("n_agents", n_agents)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    z = jnp.zeros((n_envs, n_agents), jnp.float32)
    z2 = jnp.zeros((n_envs, n_agents, 2), jnp.float32)
    return Agents(angles=z, positions=z2, angvelocity=z, velocity=z2)
