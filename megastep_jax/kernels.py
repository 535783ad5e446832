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

INTERFACE = _megastep_cpu.interface() if _megastep_cpu is not None else None
"""The compiled kernels' interface, from the one table in ``csrc/operands.h``: per kernel
its ``args`` and ``results`` as (name, dtype, core rank) in call order and its ``attrs``;
the ``constants`` shared with :mod:`megastep_jax.reference`; the attributes' named values
(``enums``). The wrappers below order their operands by these names."""

COLLISIONS = dict(INTERFACE["enums"]["collision"]) if INTERFACE else {"stop": 0, "slide": 1, "bounce": 2}
TRAVERSALS = (dict(INTERFACE["enums"]["traversal"]) if INTERFACE
              else {"grid": 0, "brute": 1, "rays": 2, "auto": 3})
"""How the render kernel finds each ray's nearest line (all give the same result): "grid"
sweeps the scenery's acceleration grid where it has one, ring by ring around the camera
(a whole camera at a time on the CPU, a block's span of 64 pixels on CUDA), "brute" casts
every line in index order (the specification's loop), "rays" walks the grid one ray at a
time (a 2D DDA per pixel), "auto" (the default) takes the grid
for an env with at least ``GRID_MIN_LINES`` static lines and every line below that,
where casting them all is faster (csrc/megastep.h, kGridMinLines)."""
GRID_MIN_LINES = INTERFACE["constants"]["GRID_MIN_LINES"] if INTERFACE else 256


def check_constants(interface=None) -> None:
    """Raises RuntimeError where the reference's constants differ from the compiled kernels'.

    Every constant of the kernel interface must be an attribute of
    :mod:`megastep_jax.reference` equal to it in float32, and the collision modes must match.
    """
    from . import reference  # deferred: reference is only needed for this check

    interface = INTERFACE if interface is None else interface
    for name, value in interface["constants"].items():
        if not hasattr(reference, name):
            raise RuntimeError(f"megastep_jax.reference.{name}: missing; the kernels define it as {value!r}")
        if np.float32(getattr(reference, name)) != np.float32(value):
            raise RuntimeError(f"megastep_jax.reference.{name} = {getattr(reference, name)!r} where the "
                               f"compiled kernels use {value!r}; rebuild, or fix csrc/megastep.h")
    if dict(reference.COLLISIONS) != dict(interface["enums"]["collision"]):
        raise RuntimeError(f"megastep_jax.reference.COLLISIONS = {reference.COLLISIONS!r} where the "
                           f"compiled kernels use {interface['enums']['collision']!r}")


def ordered(kernel: str, values: dict, interface=None) -> list:
    """``values`` (operand name -> array) in ``kernel``'s call order, checked against its table.

    Raises:
        ValueError: an operand missing or unknown to the compiled kernel, or of the wrong
            dtype or rank.
    """
    table = (INTERFACE if interface is None else interface)[kernel]["args"]
    names = [name for name, _, _ in table]
    if set(values) != set(names):
        missing, unknown = sorted(set(names) - set(values)), sorted(set(values) - set(names))
        raise ValueError(f"{kernel}: the operands do not match the compiled kernel's: missing "
                         f"{missing}, unknown {unknown}")
    out = []
    for name, dtype, rank in table:
        x = values[name]
        if str(x.dtype) != dtype or x.ndim != rank:
            raise ValueError(f"{kernel}: operand {name}: the kernel takes {dtype} of rank {rank}, "
                             f"got {x.dtype} of shape {tuple(x.shape)}")
        out.append(x)
    return out


def _results(kernel: str, shapes: dict) -> tuple:
    """ShapeDtypeStructs of ``kernel``'s results in call order, dtypes from its table."""
    table = INTERFACE[kernel]["results"]
    if set(shapes) != {name for name, _, _ in table} or any(len(shapes[n]) != r for n, _, r in table):
        raise ValueError(f"{kernel}: the results do not match the compiled kernel's {table}")
    return tuple(jax.ShapeDtypeStruct(shapes[name], jnp.dtype(dtype)) for name, dtype, _ in table)


if INTERFACE is not None:
    check_constants()


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


def _grid_operands(scenery: Scenery):
    """(grid_cells, grid_lines, grid_origin, grid_dims); a one-cell "no grid" without them."""
    if scenery.has_grid:
        return scenery.grid_cells, scenery.grid_lines, scenery.grid_origin, scenery.grid_dims
    E = scenery.lines.shape[0]
    i32 = jnp.int32
    return (jnp.zeros((E, 1), i32), jnp.zeros((E, 1), i32), jnp.zeros((E, 3), jnp.float32),
            jnp.zeros((E, 2), i32))


def render(scenery: Scenery, agents: Agents, res: int, fov, radius, backend: str = "kernel",
           traversal: str = "auto") -> Render:
    """Kernel twin of :func:`megastep_jax.reference.render`; backend "kernel" or
    "cuda-emulated", ``traversal`` a key of TRAVERSALS."""
    E, A = agents.angles.shape[-2:]
    cells, entries, origin, dims = _grid_operands(scenery)
    args = ordered("render", dict(
        lines=scenery.lines, n_lines=scenery.n_lines, lights=scenery.lights,
        n_lights=scenery.n_lights, textures=scenery.textures, texel_starts=scenery.texel_starts,
        texel_widths=scenery.texel_widths, baked=scenery.baked, model=scenery.model,
        angles=agents.angles, positions=agents.positions, fov=_f32(fov), radius=_f32(radius),
        grid_cells=cells, grid_lines=entries, grid_origin=origin, grid_dims=dims))
    shape = (E, A, res)
    out = jax.ffi.ffi_call(
        "megastep_render" + _TARGETS[backend],
        _results("render", dict(indices=shape, locations=shape, dots=shape, distances=shape,
                                screen=shape + (3,))),
        vmap_method="expand_dims",
    )(*args, traversal=np.int32(TRAVERSALS[traversal]))
    out = dict(zip([name for name, _, _ in INTERFACE["render"]["results"]], out))
    return Render(**out)


def physics(scenery: Scenery, agents: Agents, fps, radius, collision: str = "stop",
            restitution=1.0, backend: str = "kernel"):
    """Kernel twin of :func:`megastep_jax.reference.physics`; backend "kernel" or "cuda-emulated"."""
    E, A = agents.angles.shape[-2:]
    args = ordered("physics", dict(
        lines=scenery.lines, n_lines=scenery.n_lines, positions=agents.positions,
        velocity=agents.velocity, angles=agents.angles, angvelocity=agents.angvelocity,
        fps=_f32(fps), radius=_f32(radius), restitution=_f32(restitution)))
    out = jax.ffi.ffi_call(
        "megastep_physics" + _TARGETS[backend],
        _results("physics", dict(positions=(E, A, 2), velocity=(E, A, 2), angles=(E, A),
                                 angvelocity=(E, A), progress=(E, A))),
        vmap_method="expand_dims",
    )(*args, collision=np.int32(COLLISIONS[collision]))
    out = dict(zip([name for name, _, _ in INTERFACE["physics"]["results"]], out))
    pos, vel, ang, angv, progress = (out[k] for k in ("positions", "velocity", "angles", "angvelocity", "progress"))
    return Agents(angles=ang, positions=pos, angvelocity=angv, velocity=vel), progress


def bake(scenery: Scenery, backend: str = "kernel") -> Scenery:
    """Kernel twin of :func:`megastep_jax.reference.bake`; backend "kernel" or "cuda-emulated"."""
    args = ordered("bake", dict(
        lines=scenery.lines, n_lines=scenery.n_lines, lights=scenery.lights,
        n_lights=scenery.n_lights, texel_starts=scenery.texel_starts,
        texel_widths=scenery.texel_widths))
    (baked,) = jax.ffi.ffi_call(
        "megastep_bake" + _TARGETS[backend],
        _results("bake", dict(baked=scenery.baked.shape[-2:])),
        vmap_method="expand_dims",
    )(*args, n_agents=np.int32(scenery.n_agents))
    return scenery.replace(baked=baked)


def seen(seen_words, indices, locations, geometry, texel_starts, texel_widths, n_agents: int,
         backend: str = "kernel"):
    """Kernel twin of :func:`megastep_jax.reference.seen`; backend "kernel" or "cuda-emulated"."""
    E, W = seen_words.shape[-2:]
    args = ordered("seen", dict(seen=seen_words, indices=indices, locations=locations,
                                geometry=geometry, texel_starts=texel_starts,
                                texel_widths=texel_widths))
    words, new = jax.ffi.ffi_call(
        "megastep_seen" + _TARGETS[backend],
        _results("seen", dict(seen=(E, W), new_texels=(E,))),
        vmap_method="expand_dims",
    )(*args, n_agents=np.int32(n_agents))
    return words, new
