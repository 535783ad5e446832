"""Regenerates docs/plot-minimal.png, plot-explorer.png and plot-deathmatch.png.

Usage:
    python scripts/docs_pictures.py [--out docs] [--steps 12]

Each env (defaults, seed 0) is reset and stepped ``--steps`` times with random actions, then
drawn with ``env.plot_state(env.state(state, params))`` and saved at 64 dpi. The pictures
of the plans themselves come from ``benchmarks/floorplans.py --pictures docs``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import jax

from megastep_jax import spaces
from megastep_jax.envs import Deathmatch, Explorer, Minimal


def picture(env, steps: int, key: jax.Array):
    params = env.default_params
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    key, k = jax.random.split(key)
    obs, state = reset(k, params)
    for _ in range(steps):
        key, k_act, k_step = jax.random.split(key, 3)
        action = spaces.sample(env.action_space(params), k_act)
        obs, state, *_ = step(k_step, state, action, params)
    shown = env.state(state, params)
    shown["obs"] = dict(jax.device_get(obs))
    return env.plot_state(shown)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, env in [("minimal", Minimal()), ("explorer", Explorer()), ("deathmatch", Deathmatch())]:
        fig = picture(env, args.steps, jax.random.key(0))
        fig.savefig(args.out / f"plot-{name}.png", dpi=64)
        print(f"wrote {args.out / f'plot-{name}.png'}")


if __name__ == "__main__":
    main()
