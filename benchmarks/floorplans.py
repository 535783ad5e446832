"""Procedural floorplans: generation speed, and wall counts next to real Cubicasa5k plans.

Usage:
    python benchmarks/floorplans.py [--n 1000] [--pictures docs/]

Prints the time to generate ``n`` plans on one core, and the distribution of wall-segment,
room and size counts of those plans beside the three real plans in
../shared/data/cubicasa (when present). With ``--pictures``, also writes
geometry-procedural.png and geometry-cubicasa.png there.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from megastep_jax import cubicasa, floorplans, geometry as geom

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cubicasa"


def stats(name: str, xs) -> str:
    xs = np.asarray(xs, dtype=float)
    q = np.percentile(xs, [0, 5, 25, 50, 75, 95, 100])
    return f"{name:>14}: min {q[0]:6.1f}  p5 {q[1]:6.1f}  p25 {q[2]:6.1f}  median {q[3]:6.1f}  " \
           f"p75 {q[4]:6.1f}  p95 {q[5]:6.1f}  max {q[6]:6.1f}  mean {xs.mean():6.1f}"


def describe(gs) -> dict[str, list[float]]:
    spans = [g.walls.reshape(-1, 2).max(0) - g.walls.reshape(-1, 2).min(0) for g in gs]
    return {
        "walls": [len(g.walls) for g in gs],
        "rooms": [len(g.lights) for g in gs],
        "across (m)": [s.max() for s in spans],
        "area (m^2)": [(g.masks > 0).sum() * g.res**2 for g in gs],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--pictures", type=Path, default=None)
    args = parser.parse_args()

    ids = floorplans._sample_ids(args.n, "training", 1)
    start, cpu = time.perf_counter(), time.process_time()
    gs = [floorplans.generate(i) for i in ids]
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"generated {args.n} procedural plans in {elapsed:.1f} s wall clock, {cpu:.1f} s CPU "
          f"({1e3 * cpu / args.n:.1f} ms CPU per plan; one process, OMP_NUM_THREADS={threads})")

    print(f"\nprocedural ({args.n} plans from floorplans.sample(seed=1)):")
    for k, v in describe(gs).items():
        print(stats(k, v))
    counts = np.bincount(describe(gs)["walls"])
    edges = np.arange(0, len(counts) + 25, 25)
    hist = np.histogram(describe(gs)["walls"], edges)[0]
    print("  wall-count histogram (bins of 25): " + ", ".join(
        f"{lo}-{lo + 24}: {c}" for lo, c in zip(edges[:-1], hist) if c))

    real = [DATA / f"{i}.svg" for i in ("353", "437", "551")]
    if all(p.exists() for p in real):
        rs = [cubicasa.geometry_from_svg(p) for p in real]
        print("\nreal Cubicasa5k plans (../shared/data/cubicasa):")
        for g, row in zip(rs, zip(*describe(rs).values())):
            print(f"  {g.id}: walls {row[0]}, rooms {row[1]}, across {row[2]:.1f} m, area {row[3]:.0f} m^2")
    else:
        rs = []
        print("\n(real plans absent: ../shared/data/cubicasa)")

    if args.pictures:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        args.pictures.mkdir(parents=True, exist_ok=True)
        import shapely

        def fill(g):  # outline area over bounding-box area; < 1 for L, U and T shapes
            outline = shapely.union_all(shapely.get_parts(shapely.polygonize(shapely.linestrings(g.walls))))
            return outline.area / outline.envelope.area

        shown = next((g for g in gs if fill(g) < 0.85), gs[0])
        fig = geom.display(shown, title=f"procedural plan {shown.id}")
        fig.savefig(args.pictures / "geometry-procedural.png", dpi=72)
        plt.close(fig)
        if rs:
            fig = geom.display(rs[0], title=f"Cubicasa5k plan {rs[0].id} (CC BY-NC 4.0)")
            fig.savefig(args.pictures / "geometry-cubicasa.png", dpi=72)
            plt.close(fig)


if __name__ == "__main__":
    main()
