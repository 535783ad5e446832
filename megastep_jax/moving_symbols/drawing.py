"""Drawing frames: a compiled kernel (an XLA FFI call, ``csrc/draw.h``) and its jnp twin.

Each symbol's image is scaled by ``scale`` and turned by ``angle`` (clockwise on screen)
about its centre, which is put at ``position``; a pixel of the frame takes the bilinear
sample (premultiplied by alpha, zero outside the image) at the inverse-mapped centre of
the pixel, composited over what lies below (later symbols on top), starting from the
background or black. The result is clipped to [0, 1], scaled to 0-255 and rounded; "L"
frames take the ITU-R 601-2 luma of the rounded RGB (as Pillow's ``convert("L")``).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .. import kernels
from .bank import Bank

__all__ = ["draw", "draw_reference", "draw_kernel", "kernel_available", "DRAW_BACKENDS"]

DRAW_BACKENDS = ("kernel", "reference")
LUMA = (0.299, 0.587, 0.114)


@functools.lru_cache(maxsize=None)
def kernel_available() -> bool:
    """Whether the compiled draw kernel is registered (CPU builds that include it)."""
    module = kernels._megastep_cpu
    return module is not None and "megastep_draw" in module.registrations()


def draw_reference(bank: Bank, sprite, background, position, angle, scale, color: bool):
    """Frames in jnp: uint8 (N, H, W, 3 if color else 1).

    Args:
        bank: the Bank.
        sprite: (N, S) int32 image of each symbol.
        background: (N,) int32, -1 for black.
        position: (N, S, 2) float32 centres (x, y), y down.
        angle: (N, S) float32 radians, clockwise on screen.
        scale: (N, S) float32.
        color: RGB frames if True, else L.
    """
    H, W = bank.backgrounds.shape[1:3]
    h, w = bank.sprites.shape[1:3]
    texels = bank.sprites.reshape(-1, 4)
    ys, xs = jnp.meshgrid(jnp.arange(H, dtype=jnp.float32) + 0.5, jnp.arange(W, dtype=jnp.float32) + 0.5,
                          indexing="ij")

    def one(sprite, background, position, angle, scale):
        out = jnp.where(background >= 0, bank.backgrounds[jnp.maximum(background, 0)], 0.0)
        for i in range(sprite.shape[0]):  # later symbols on top
            k = sprite[i]
            sw, sh = bank.sizes[k, 0], bank.sizes[k, 1]
            dx, dy = xs - position[i, 0], ys - position[i, 1]
            c, s = jnp.cos(angle[i]), jnp.sin(angle[i])
            u = (c * dx + s * dy) / scale[i] + sw / 2 - 0.5
            v = (-s * dx + c * dy) / scale[i] + sh / 2 - 0.5
            u0, v0 = jnp.floor(u), jnp.floor(v)
            fu, fv = (u - u0)[..., None], (v - v0)[..., None]
            u0, v0 = u0.astype(jnp.int32), v0.astype(jnp.int32)

            def tap(uu, vv):
                inside = (uu >= 0) & (uu < sw) & (vv >= 0) & (vv < sh)
                idx = k * (h * w) + jnp.clip(vv + 1, 0, h - 1) * w + jnp.clip(uu + 1, 0, w - 1)
                return jnp.where(inside[..., None], texels[idx], 0.0)

            rgba = ((1 - fu) * (1 - fv) * tap(u0, v0) + fu * (1 - fv) * tap(u0 + 1, v0)
                    + (1 - fu) * fv * tap(u0, v0 + 1) + fu * fv * tap(u0 + 1, v0 + 1))
            out = out * (1 - rgba[..., 3:]) + rgba[..., :3]
        out = jnp.round(jnp.clip(out, 0.0, 1.0) * 255)
        if not color:
            out = jnp.round(out @ jnp.array(LUMA, jnp.float32))[..., None]
        return out.astype(jnp.uint8)

    return jax.vmap(one)(sprite, background, position, angle, scale)


def draw_kernel(bank: Bank, sprite, background, position, angle, scale, color: bool):
    """Kernel twin of :func:`draw_reference` (same arguments and result)."""
    N = sprite.shape[0]
    H, W = bank.backgrounds.shape[1:3]
    return jax.ffi.ffi_call(
        "megastep_draw", jax.ShapeDtypeStruct((N, H, W, 3 if color else 1), jnp.uint8),
        vmap_method="sequential",
    )(bank.sprites, bank.sizes, bank.backgrounds, sprite.astype(jnp.int32), background.astype(jnp.int32),
      position.astype(jnp.float32), angle.astype(jnp.float32), scale.astype(jnp.float32))


def draw(backend: str, bank: Bank, sprite, background, position, angle, scale, color: bool):
    """Frames with the kernel where it runs (``backend="kernel"`` on a CPU build that
    has it), else with jnp; arguments as :func:`draw_reference`."""
    if backend == "kernel" and jax.default_backend() == "cpu" and kernel_available():
        return draw_kernel(bank, sprite, background, position, angle, scale, color)
    return draw_reference(bank, sprite, background, position, angle, scale, color)
