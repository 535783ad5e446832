"""Shared fixtures: small sceneries built once per session."""
import os
import pathlib
import shutil
import tempfile

import jax
import numpy as np
import pytest

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"

_CACHE_OWNER = "_megastep_compilation_cache"


def pytest_configure(config):
    """One JAX compilation cache for the whole run: its test processes (pytest-xdist
    workers) and the subprocesses tests start, through ``JAX_COMPILATION_CACHE_DIR``.

    Many tests build the same computation afresh (a trainer per run of the command line,
    a new process per check); XLA then compiles it once. A run makes a fresh directory
    and removes it at the end, so nothing outlives it; a ``JAX_COMPILATION_CACHE_DIR``
    set beforehand is used as it is (and kept).
    """
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # this process leads the run
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="megastep-jax-tests-")
        setattr(config, _CACHE_OWNER, os.environ["JAX_COMPILATION_CACHE_DIR"])
    # Compilations under 0.3 s are not worth writing; most of the suite's are longer.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


# The files that take longest, longest first (from `pytest --durations`): `make test` deals
# whole files to its processes in collection order (pytest-xdist's loadfile with
# --no-loadscope-reorder), and a long file dealt last would leave one process working alone.
LONGEST_FIRST = ("test_ppo.py", "test_train.py", "test_networks.py", "test_physics_contacts.py",
                 "test_determinism.py", "test_vmap_seeds.py", "test_envs.py", "test_heads.py",
                 "test_distributed.py", "test_autoreset.py", "test_properties.py",
                 "test_recording.py", "test_moving_symbols.py", "test_gymnax.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


def pytest_unconfigure(config):
    owned = getattr(config, _CACHE_OWNER, None)
    if owned:
        shutil.rmtree(owned, ignore_errors=True)


def _backend_params(*backends):
    # ids with "_" so that `pytest -k cuda_emulated` selects the emulated cases
    return [pytest.param(b, id=b.replace("-", "_")) for b in backends]


# The compiled backends, each tested against the jnp reference: the CPU kernels and the CUDA
# file run on the CPU by csrc/cuda_emulation.h. For parametrize("backend", ...).
COMPILED_BACKENDS = _backend_params("kernel", "cuda-emulated")
ALL_BACKENDS = _backend_params("kernel", "reference", "cuda-emulated")


def gpus():
    """JAX's GPU devices, [] without any."""
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


def _cuda_ready():
    from megastep_jax import kernels

    return bool(gpus()) and kernels.CUDA_REGISTERED


# For the compiled CUDA kernels on a real GPU. scripts/gpu_check.sh sets
# MEGASTEP_REQUIRE_GPU=1: there a missing GPU fails the test instead of skipping it.
requires_gpu = pytest.mark.skipif(not _cuda_ready() and os.environ.get("MEGASTEP_REQUIRE_GPU") != "1",
                                  reason="needs a GPU and the CUDA kernels")


@pytest.fixture(params=COMPILED_BACKENDS)
def compiled_backend(request):
    """Each compiled backend in turn ("kernel", "cuda-emulated")."""
    return request.param


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
