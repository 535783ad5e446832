"""Thin ``jax.ffi.ffi_call`` wrappers around the compiled kernels in ``csrc/``.

The CPU targets are registered at import whenever the extension was built (always, on
install). The CUDA targets are registered only where the CUDA extension was built and JAX
has a GPU backend. The emulated CUDA targets (``csrc/cuda_kernels.cu`` compiled for the CPU
with ``csrc/cuda_emulation.h``; ``backend="cuda-emulated"``) are CPU targets of their own
names, registered wherever that extension was built. Validation happens in
:mod:`megastep_jax.core`; these wrappers assume well-formed operands.

Every call uses ``vmap_method="expand_dims"``: under ``vmap`` an unbatched operand (say
the scenery, while fov is swept) reaches the kernel with a leading axis of size 1 and the
kernel broadcasts it, so it is never copied per batch member.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .state import Agents, Render, Scenery

try:
    from . import _megastep_cpu
except ImportError as e:  # pragma: no cover - only without a build
    _megastep_cpu = None
    _CPU_IMPORT_ERROR = e
else:
    _CPU_IMPORT_ERROR = None
    for _name, _capsule in _megastep_cpu.registrations().items():
        jax.ffi.register_ffi_target(_name, _capsule, platform="cpu")

try:  # the CUDA library exists only where nvcc was found at build time
    from . import _megastep_cuda
except ImportError:
    _megastep_cuda = None


def _has_gpu() -> bool:
    try:
        return len(jax.devices("gpu")) > 0
    except RuntimeError:
        return False


try:  # built by default (MEGASTEP_CUDA_EMULATED=ON)
    from . import _megastep_cuda_emulated
except ImportError as e:  # pragma: no cover - only in a build without it
    _megastep_cuda_emulated = None
    _EMULATED_IMPORT_ERROR = e
else:
    _EMULATED_IMPORT_ERROR = None
    for _name, _capsule in _megastep_cuda_emulated.registrations().items():
        jax.ffi.register_ffi_target(_name, _capsule, platform="cpu")

# FFI target name suffix per backend.
_TARGETS = {"kernel": "", "cuda-emulated": "_cuda_emulated"}

CUDA_REGISTERED = False
if _megastep_cuda is not None and _has_gpu():
    for _name, _capsule in _megastep_cuda.registrations().items():
        jax.ffi.register_ffi_target(_name, _capsule, platform="CUDA")
    CUDA_REGISTERED = True

COLLISIONS = {"stop": 0, "slide": 1, "bounce": 2}


def available() -> bool:
    """Whether the compiled CPU kernels can be called."""
    return _megastep_cpu is not None


def require(platform: str | None = None) -> None:
    """Raises a clear error where the kernels for ``platform`` are missing."""
    if _megastep_cpu is None:
        raise RuntimeError(
            "megastep_jax's compiled kernels are not built "
            f"({_CPU_IMPORT_ERROR}); reinstall with `pip install .`, or pass backend='reference'"
        )
    platform = platform or jax.default_backend()
    if platform in ("gpu", "cuda") and not CUDA_REGISTERED:
        raise RuntimeError(
            "megastep_jax was built without CUDA kernels (no nvcc at build time) or JAX sees no "
            "GPU; rebuild with MEGASTEP_CUDA=ON on a machine with the CUDA toolkit, or pass "
            "backend='reference'"
        )


def require_emulated() -> None:
    """Raises a clear error where the emulated CUDA kernels were not built."""
    if _megastep_cuda_emulated is None:
        raise RuntimeError(
            "megastep_jax was built without the emulated CUDA kernels "
            f"({_EMULATED_IMPORT_ERROR}); rebuild with MEGASTEP_CUDA_EMULATED=ON, or pass "
            "backend='kernel' or 'reference'"
        )


def _f32(x):
    return jnp.asarray(x, jnp.float32)


TRAVERSALS = {"grid": 0, "brute": 1, "rays": 2}
"""How the render kernel finds each ray's nearest line (all give the same result): "grid"
walks the scenery's acceleration grid where it has one (per camera on CPU, per ray on
CUDA), "brute" casts every line in index order (the specification's loop), "rays" walks
the grid one ray at a time as the CUDA kernel does."""


def _grid_operands(scenery: Scenery):
    """(grid_cells, grid_lines, grid_origin, grid_dims); a one-cell "no grid" without them."""
    if scenery.has_grid:
        return scenery.grid_cells, scenery.grid_lines, scenery.grid_origin, scenery.grid_dims
    E = scenery.lines.shape[0]
    i32 = jnp.int32
    return (jnp.zeros((E, 1), i32), jnp.zeros((E, 1), i32), jnp.zeros((E, 3), jnp.float32),
            jnp.zeros((E, 2), i32))


def render(scenery: Scenery, agents: Agents, res: int, fov, radius, backend: str = "kernel",
           traversal: str = "grid") -> Render:
    """Kernel twin of :func:`megastep_jax.reference.render`; backend "kernel" or
    "cuda-emulated", ``traversal`` a key of TRAVERSALS."""
    E, A = agents.angles.shape[-2:]
    f32, i32 = jnp.float32, jnp.int32
    shape = (E, A, res)
    out = jax.ffi.ffi_call(
        "megastep_render" + _TARGETS[backend],
        (jax.ShapeDtypeStruct(shape, i32), jax.ShapeDtypeStruct(shape, f32),
         jax.ShapeDtypeStruct(shape, f32), jax.ShapeDtypeStruct(shape, f32),
         jax.ShapeDtypeStruct(shape + (3,), f32)),
        vmap_method="expand_dims",
    )(scenery.lines, scenery.n_lines, scenery.lights, scenery.n_lights, scenery.textures,
      scenery.texel_starts, scenery.texel_widths, scenery.baked, scenery.model,
      agents.angles, agents.positions, _f32(fov), _f32(radius), *_grid_operands(scenery),
      traversal=np.int32(TRAVERSALS[traversal]))
    return Render(*out)


def physics(scenery: Scenery, agents: Agents, fps, radius, collision: str = "stop",
            restitution=1.0, backend: str = "kernel"):
    """Kernel twin of :func:`megastep_jax.reference.physics`; backend "kernel" or "cuda-emulated"."""
    E, A = agents.angles.shape[-2:]
    f32 = jnp.float32
    pos, vel, ang, angv, progress = jax.ffi.ffi_call(
        "megastep_physics" + _TARGETS[backend],
        (jax.ShapeDtypeStruct((E, A, 2), f32), jax.ShapeDtypeStruct((E, A, 2), f32),
         jax.ShapeDtypeStruct((E, A), f32), jax.ShapeDtypeStruct((E, A), f32),
         jax.ShapeDtypeStruct((E, A), f32)),
        vmap_method="expand_dims",
    )(scenery.lines, scenery.n_lines, agents.positions, agents.velocity, agents.angles,
      agents.angvelocity, _f32(fps), _f32(radius), _f32(restitution),
      collision=np.int32(COLLISIONS[collision]))
    return Agents(angles=ang, positions=pos, angvelocity=angv, velocity=vel), progress


def bake(scenery: Scenery, backend: str = "kernel") -> Scenery:
    """Kernel twin of :func:`megastep_jax.reference.bake`; backend "kernel" or "cuda-emulated"."""
    baked = jax.ffi.ffi_call(
        "megastep_bake" + _TARGETS[backend],
        jax.ShapeDtypeStruct(scenery.baked.shape[-2:], jnp.float32),
        vmap_method="expand_dims",
    )(scenery.lines, scenery.n_lines, scenery.lights, scenery.n_lights, scenery.texel_starts,
      scenery.texel_widths, n_agents=np.int32(scenery.n_agents))
    return scenery.replace(baked=baked)
