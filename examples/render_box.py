"""Builds the box scene, steps physics, renders, and saves a plan view and the camera strip.

    python examples/render_box.py --out runs/render
"""
import argparse
import pathlib

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from megastep_jax import core, scene, toys  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/render")
    args = p.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    scenery = scene.scenery([toys.room_with_column()], n_agents=2, key=jax.random.key(0))
    agents = core.init_agents(1, 2).replace(
        positions=jnp.array([[[1.8, 3.3], [4.8, 4.6]]]), angles=jnp.array([[20.0, -150.0]]),
        velocity=jnp.array([[[3.0, 0.5], [0.0, 0.0]]]))
    agents, progress = core.physics(scenery, agents, fps=10.0)
    r = core.render(scenery, agents, res=128, fov=100.0)

    fig = plt.figure(figsize=(10, 5))
    ax = fig.add_subplot(1, 2, 1)
    lines = np.asarray(scenery.lines[0, 16:int(scenery.n_lines[0])])
    for (x0, y0), (x1, y1) in lines:
        ax.plot([x0, x1], [y0, y1], color="k")
    for a, colour in enumerate(["tab:blue", "tab:orange"]):
        (x, y), angle = np.asarray(agents.positions[0, a]), float(agents.angles[0, a])
        ax.add_patch(plt.Circle((x, y), core.AGENT_RADIUS, color=colour))
        for edge in (-50, 50):
            t = np.deg2rad(angle + edge)
            ax.plot([x, x + 2 * np.cos(t)], [y, y + 2 * np.sin(t)], color=colour, lw=0.8)
    lights = np.asarray(scenery.lights[0, :int(scenery.n_lights[0])])
    ax.scatter(lights[:, 0], lights[:, 1], marker="*", color="gold", s=150, zorder=3)
    ax.set_aspect("equal")
    ax.set_title(f"plan; progress after one step {np.asarray(progress[0]).round(3)}")
    for a in range(2):
        strip = fig.add_subplot(4, 2, 2 + 2 * a)
        strip.imshow(np.asarray(core.gamma_encode(r.screen[0, a]))[None].repeat(8, 0), aspect="auto")
        strip.set_title(f"agent {a}: rgb", fontsize=9)
        strip.axis("off")
        depth = fig.add_subplot(4, 2, 6 + 2 * a)
        depth.imshow(np.asarray(r.distances[0, a])[None], aspect="auto", cmap="viridis_r")
        depth.set_title(f"agent {a}: distance", fontsize=9)
        depth.axis("off")
    fig.tight_layout()
    path = out / "render.png"
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
