"""Moving Symbols throughput: videos of 20 frames at 64x64 with 2 symbols, per second.

The iterator used the original's way (one ``MovingSymbolsEnvironment(params, seed)`` per
video, with a ``data_dir``, a subscriber, ``env.next()`` 20 times) against the batched,
jitted ``generate``, for independent and interacting symbols. The symbol folder is an
MNIST-format folder (RGBA PNGs, 10 labels) written to a temporary directory.

    PYTHONPATH=. python benchmarks/moving_symbols.py [--batches 256 1024] [--iterated 50]
    PYTHONPATH=. python benchmarks/moving_symbols.py --gif docs/moving_symbols.gif   # the docs' GIF

Compilation and the first bank load are timed apart and excluded from the rates. Each
line gives videos per second of wall-clock time and per CPU-second of the process (all
its threads): on a machine shared with other work the second is the steadier figure,
and it is the per-core rate.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import jax
import numpy as np
from PIL import Image

from megastep_jax.moving_symbols import MovingSymbols, MovingSymbolsEnvironment

N_FRAMES, SIZE, N_SYMBOLS = 20, (64, 64), 2


class Sink:
    """A subscriber that keeps nothing, so message building is part of the cost."""

    def process_message(self, message):
        pass


def mnist_like(root: str, per_label: int = 50) -> str:
    """An MNIST-format folder of 28x28 RGBA blobs: root/training/<digit>/NNNN.png."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:28, 0:28]
    for label in range(10):
        folder = os.path.join(root, "training", str(label))
        os.makedirs(folder, exist_ok=True)
        for k in range(per_label):
            cx, cy, rx, ry = rng.uniform(11, 17), rng.uniform(11, 17), rng.uniform(4, 8), rng.uniform(6, 10)
            inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
            alpha = np.clip((1.2 - inside) * 400, 0, 255).astype(np.uint8)
            rgba = np.stack([np.where(alpha > 0, 255, 0)] * 3 + [alpha], -1).astype(np.uint8)
            Image.fromarray(rgba, "RGBA").save(os.path.join(folder, f"{k:04d}.png"))
    return root


def params(data_dir: str, interacting: bool) -> dict:
    return {"data_dir": data_dir, "symbol_labels": list(range(10)), "num_symbols": N_SYMBOLS,
            "video_size": SIZE, "position_speed_limits": (1.0, 3.0), "rotation_speed_limits": (0.0, 0.1),
            "scale_limits": (0.8, 1.2), "scale_function_type": "sine", "scale_period_limits": (10, 30),
            "interacting_symbols": interacting}


def timed(f) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of f()."""
    w, c = time.perf_counter(), time.process_time()
    f()
    return time.perf_counter() - w, time.process_time() - c


def iterated(p: dict, n_videos: int) -> tuple[float, float, float]:
    """(videos per wall second, per CPU-second, ms per construction) through the iterator."""

    def one(seed):
        env = MovingSymbolsEnvironment(p, seed)
        env.add_subscriber(Sink())
        for _ in range(N_FRAMES):
            env.next()

    one(10 ** 6)  # compiles and loads the bank
    construct, _ = timed(lambda: [MovingSymbolsEnvironment(p, s) for s in range(100)])
    wall, cpu = timed(lambda: [one(s) for s in range(n_videos)])
    return n_videos / wall, n_videos / cpu, construct * 10


def batched(p: dict, n_videos: int, repeats: int = 3) -> tuple[float, float, float]:
    """(compile seconds, videos per wall second, per CPU-second; best of `repeats`)."""
    ms = MovingSymbols(p)
    compile_s, _ = timed(lambda: jax.block_until_ready(ms.generate(jax.random.key(0), n_videos, N_FRAMES)))
    best = (np.inf, np.inf)
    for r in range(repeats):
        w, c = timed(lambda: jax.block_until_ready(ms.generate(jax.random.key(r + 1), n_videos, N_FRAMES)))
        best = min(best, (w, c))
    return compile_s, n_videos / best[0], n_videos / best[1]


def gif(path: str) -> None:
    """Four videos without (top row) and four with (bottom row) symbol contacts, 40 frames."""
    rows = []
    for interacting in (False, True):
        ms = MovingSymbols({"num_symbols": 3, "video_size": (64, 64), "scale_limits": (0.8, 1.2),
                            "scale_function_type": "sine", "scale_period_limits": (20, 40),
                            "rotation_speed_limits": (0.0, 0.08), "position_speed_limits": (1.0, 3.0),
                            "interacting_symbols": interacting, "rotate_at_start": True})
        v = np.asarray(ms.generate(jax.random.key(7), 4, 40))  # (4, 40, 64, 64, 3)
        gap = np.full((40, 64, 2, 3), 255, np.uint8)
        rows.append(np.concatenate([v[0], gap, v[1], gap, v[2], gap, v[3]], axis=2))
    grid = np.concatenate([rows[0], np.full((40, 2) + rows[0].shape[2:], 255, np.uint8), rows[1]], axis=1)
    frames = [Image.fromarray(f) for f in grid]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=80, loop=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--iterated", type=int, default=50, help="videos through the iterator")
    parser.add_argument("--gif", help="write the docs' GIF to this path instead")
    args = parser.parse_args()
    if args.gif:
        gif(args.gif)
        return
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
          f"{jax.default_backend()}; {N_FRAMES} frames of {SIZE[0]}x{SIZE[1]}, {N_SYMBOLS} symbols; "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MEGASTEP_JAX_CACHE"] = os.path.join(tmp, "cache")  # not the user's cache
        data = mnist_like(tmp)
        for interacting in (False, True):
            p = params(data, interacting)
            tag = "interacting" if interacting else "independent"
            rate, per_cpu, construct_ms = iterated(p, args.iterated)
            print(f"{tag:12s} iterator            {rate:8.1f} videos/s, {per_cpu:8.1f} per CPU-s "
                  f"(construction {construct_ms:.2f} ms)")
            for n in args.batches:
                compile_s, rate, per_cpu = batched(p, n)
                print(f"{tag:12s} generate N={n:<6d}   {rate:8.1f} videos/s, {per_cpu:8.1f} per CPU-s "
                      f"(compiled in {compile_s:.1f} s)")


if __name__ == "__main__":
    main()
