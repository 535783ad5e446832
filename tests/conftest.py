"""Shared fixtures: small sceneries built once per session."""
import pathlib

import jax
import numpy as np
import pytest

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"


def random_geometry(rng: np.random.Generator, n_walls: int, size: float = 8.0, id: int = 0):
    """A box of side `size` plus `n_walls` random interior segments (some degenerate)."""
    from megastep_jax import geometry, toys

    box = toys.box(size, size)
    inner = rng.uniform(1.2, 1.0 + size - 0.2, (n_walls, 2, 2)).astype(np.float32)
    if n_walls >= 3:
        inner[0, 1] = inner[0, 0]                # zero-length wall
        inner[1] = inner[2]                      # coincident walls
    walls = np.concatenate([box.walls, inner])
    n_lights = int(rng.integers(0, 4))
    lights = rng.uniform(1.5, size, (n_lights, 2)).astype(np.float32)
    return geometry.geometry(walls, lights, box.masks, box.res, id=id)


@pytest.fixture(scope="session")
def random_scene():
    """(scenery, agents): 3 envs of different geometries, 3 agents each."""
    from megastep_jax import core, scene

    rng = np.random.default_rng(7)
    geoms = [random_geometry(rng, n, id=i) for i, n in enumerate([0, 5, 17])]
    s = scene.scenery(geoms, n_agents=3, key=jax.random.key(3))
    E, A = 3, 3
    agents = core.init_agents(E, A).replace(
        positions=rng.uniform(1.5, 8.5, (E, A, 2)).astype(np.float32),
        angles=rng.uniform(-180, 180, (E, A)).astype(np.float32),
        velocity=rng.normal(0, 5, (E, A, 2)).astype(np.float32),
        angvelocity=rng.normal(0, 90, (E, A)).astype(np.float32),
    )
    return s, agents
