"""Moving Symbols throughput: videos of 20 frames at 64x64 with 2 symbols, per second.

The Python iterator (one video at a time, a jitted step and render per frame, messages
built on the host and PIL images returned) against the batched, jitted ``generate``.

    PYTHONPATH=. python benchmarks/moving_symbols.py [--batches 64 256 1024] [--iterated 20]

Compilation is timed apart and excluded from the rates. Prints one line per measurement.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

from megastep_jax.moving_symbols import MovingSymbols

N_FRAMES, SIZE, N_SYMBOLS = 20, (64, 64), 2


class Sink:
    """A subscriber that keeps nothing, so message building is part of the cost."""

    def process_message(self, message):
        pass


def params(interacting: bool) -> dict:
    return {"num_symbols": N_SYMBOLS, "video_size": SIZE, "position_speed_limits": (1.0, 3.0),
            "rotation_speed_limits": (-0.1, 0.1), "scale_limits": (0.8, 1.2),
            "scale_function_type": "sine", "scale_period_limits": (10, 30),
            "interacting_symbols": interacting}


def iterated(p: dict, n_videos: int, subscriber: bool) -> float:
    """Videos per second through the iterator (after one warm-up video)."""

    def one(i):
        ms = MovingSymbols(p, seed=0, video_index=i)
        if subscriber:
            ms.add_subscriber(Sink())
        for _ in range(N_FRAMES):
            next(ms)

    one(10 ** 6)  # compiles
    t = time.perf_counter()
    for i in range(n_videos):
        one(i)
    return n_videos / (time.perf_counter() - t)


def batched(p: dict, n_videos: int, repeats: int = 3) -> tuple[float, float]:
    """(compile seconds, videos per second, best of `repeats`) for generate."""
    ms = MovingSymbols(p, seed=0)
    t = time.perf_counter()
    jax.block_until_ready(ms.generate(jax.random.key(0), n_videos, N_FRAMES))
    compile_s = time.perf_counter() - t
    best = np.inf
    for r in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(ms.generate(jax.random.key(r + 1), n_videos, N_FRAMES))
        best = min(best, time.perf_counter() - t)
    return compile_s, n_videos / best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--iterated", type=int, default=20, help="videos through the iterator")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
          f"{jax.default_backend()}; {N_FRAMES} frames of {SIZE[0]}x{SIZE[1]}, {N_SYMBOLS} symbols")
    for interacting in (False, True):
        p = params(interacting)
        tag = "interacting" if interacting else "independent"
        for sub in (False, True):
            rate = iterated(p, args.iterated, sub)
            print(f"{tag:12s} iterator{' + subscriber' if sub else '':14s} {rate:9.1f} videos/s "
                  f"({rate * N_FRAMES:8.0f} frames/s)")
        for n in args.batches:
            compile_s, rate = batched(p, n)
            print(f"{tag:12s} generate N={n:<5d}           {rate:9.1f} videos/s "
                  f"({rate * N_FRAMES:8.0f} frames/s; compiled in {compile_s:.1f} s)")


if __name__ == "__main__":
    main()
