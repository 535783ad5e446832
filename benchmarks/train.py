"""Training benchmarks: where an update's time goes, the Explorer demo run and Minimal.

    PYTHONPATH=. python benchmarks/train.py                      # everything (~25 min on CPU)
    PYTHONPATH=. python benchmarks/train.py --only split         # env vs learner time only
    PYTHONPATH=. python benchmarks/train.py --only levers        # learner levers side by side

1. ``split``: for the demo's Explorer settings, seconds per update spent stepping envs
   with random actions alone, acting (envs + policy forward passes, i.e. the rollout) and
   in a whole update; the learner's share is update - rollout. Also end-to-end env
   steps/s through ``trainer.run`` (what the command line runs).
   ``levers``: the same for the learner's levers side by side.
2. ``explorer``: the demo command (``python -m agents.train --env explorer ...``) for
   ``--minutes``; prints env steps/s and the held-out return of the trained policy
   against a random one (acceptance: at least 2x).
3. ``minimal``: a short run on Minimal with a -1 reward per collision; prints the
   collision rate per step of the trained policy against a random one.

Figures depend on the machine and on what else runs on it; the script prints them and
asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agents import ppo, train  # noqa: E402

# The demo's settings (the lead's `make demo` runs the same command line).
DEMO = ["--env", "explorer", "--res", "128", "--subsample", "2", "--plans", "32",
        "--n-envs", "64", "--n-steps", "32", "--width", "128", "--small-convs", "--core", "mlp",
        "--lr", "3e-4", "--eval-envs", "32", "--eval-steps", "3000", "--video-steps", "300"]


def _timed(f, *args, repeats=3):
    out = jax.block_until_ready(f(*args))  # compile
    tic = time.perf_counter()
    for _ in range(repeats):
        out = jax.block_until_ready(f(*args))
    return (time.perf_counter() - tic) / repeats, out


def _measure(argv, repeats=3, run_updates=4):
    """Seconds per update of the envs alone, the rollout, a whole update and a chunk of
    ``run_updates`` updates through ``trainer.run`` (the CLI's path), for DEMO + argv."""
    args = train.parse_args(DEMO + list(argv) + ["--out", "unused", "--updates", "1"])
    config = train.config_of(args)
    env, _ = train.make_envs("explorer", res=args.res, subsample=args.subsample, n_plans=args.plans,
                             n_test_plans=1, seed=0)
    trainer = ppo.make_trainer(config, env)
    params = env.default_params
    runner = trainer.init(jax.random.PRNGKey(0), params)

    from megastep_jax import spaces
    from megastep_jax.envs.base import Batched
    batched = Batched(env, config.n_envs, config.reset_ratio)
    space = env.action_space(params)

    @jax.jit
    def env_only(runner):
        def body(c, key):
            k_act, k_env = jax.random.split(key)
            action = jax.vmap(lambda k: spaces.sample(space, k))(jax.random.split(k_act, config.n_envs))
            return batched.step(k_env, c, action, params)[1], None
        return jax.lax.scan(body, runner.env_state, jax.random.split(runner.key, config.n_steps))[0]

    rollout = jax.jit(lambda r: trainer.rollout(r, params)[0])
    update = jax.jit(lambda r: trainer.update(r, params)[0])
    t_env, _ = _timed(env_only, runner, repeats=repeats)
    t_roll, _ = _timed(rollout, runner, repeats=repeats)
    t_update, _ = _timed(update, runner, repeats=repeats)
    runner, _ = jax.block_until_ready(trainer.run(runner, params, run_updates))  # compile
    tic = time.perf_counter()
    jax.block_until_ready(trainer.run(runner, params, run_updates))
    t_run = (time.perf_counter() - tic) / run_updates
    return config, dict(env=t_env, rollout=t_roll, update=t_update, run=t_run)


def _print_split(name, config, t):
    steps = config.steps_per_update
    print(f"\n== {name}: time per update ({steps} env steps, {config.n_envs} envs x {config.n_steps} "
          f"steps, {config.n_epochs} epochs x {config.n_minibatches} minibatches, width "
          f"{config.width}, intake {config.intake}), {jax.devices()}")
    print(f"envs alone (random actions)  {t['env']:7.3f} s   {steps / t['env']:9,.0f} env steps/s")
    print(f"rollout (envs + policy)      {t['rollout']:7.3f} s   {steps / t['rollout']:9,.0f} env steps/s")
    print(f"whole update                 {t['update']:7.3f} s   {steps / t['update']:9,.0f} env steps/s")
    print(f"end to end (trainer.run)     {t['run']:7.3f} s   {steps / t['run']:9,.0f} env steps/s")
    print(f"split: env {t['env'] / t['update']:.0%}, policy forward "
          f"{(t['rollout'] - t['env']) / t['update']:.0%}, learner "
          f"{(t['update'] - t['rollout']) / t['update']:.0%}", flush=True)


def split(extra=()):
    config, t = _measure(extra)
    _print_split("demo settings" + (f" {' '.join(extra)}" if extra else ""), config, t)
    return config, t


# Learner levers, measured side by side in one run (compare ratios, not absolute figures,
# on a shared machine).
LEVERS = [
    ("nn.Conv intake", ["--intake", "conv"]),
    ("unfold intake", ["--intake", "unfold"]),
    ("unfold, 4 epochs x 1 minibatch", ["--minibatches", "1"]),
    ("unfold, 2 epochs x 2 minibatches", ["--epochs", "2", "--minibatches", "2"]),
    ("unfold, width 64", ["--width", "64"]),
    ("unfold, 128 envs", ["--n-envs", "128"]),
]


def levers():
    rows = []
    for name, extra in LEVERS:
        config, t = _measure(extra, repeats=2, run_updates=3)
        _print_split(name, config, t)
        rows.append((name, config, t))
    base = rows[0][2]["run"] / rows[0][1].steps_per_update
    print("\n== levers (end to end, relative to the first row; learner share of an update)")
    for name, config, t in rows:
        per_step = t["run"] / config.steps_per_update
        print(f"{name:36s} {config.steps_per_update / t['run']:9,.0f} env steps/s  "
              f"x{base / per_step:4.2f}   learner {(t['update'] - t['rollout']) / t['update']:4.0%}")


def explorer(minutes: float, out: str):
    result = train.main(DEMO + ["--minutes", str(minutes), "--out", out, "--no-progress"])
    _report("explorer", result, minutes)


def minimal(minutes: float, out: str):
    result = train.main(["--env", "minimal", "--res", "64", "--n-envs", "32", "--n-steps", "32",
                         "--width", "64", "--small-convs", "--core", "mlp", "--lr", "1e-3",
                         "--minutes", str(minutes), "--eval-envs", "32", "--eval-steps", "200",
                         "--video-steps", "100", "--out", out, "--no-progress"])
    _report("minimal", result, minutes)
    e = result["evaluation"]
    print(f"minimal collision rate per step: trained {e['trained']['info/collision']:.4f} "
          f"(moving {e['trained']['info/moving']:.2f}), greedy {e['greedy']['info/collision']:.4f}, "
          f"random {e['random']['info/collision']:.4f} (moving {e['random']['info/moving']:.2f})")


def _report(name, result, minutes):
    import csv
    with open(result["metrics"]) as f:
        rows = list(csv.DictReader(f))
    rate = [float(r["steps_per_s"]) for r in rows[len(rows) // 10:]]  # past compilation
    e = result.get("evaluation", {})
    print(f"\n== {name}: {minutes} min, {result['updates']} updates, {result['env_steps']:,} env steps, "
          f"median {sorted(rate)[len(rate) // 2]:,.0f} env steps/s after compilation")
    if e:
        print(f"held-out episode return: trained {e['trained']['episode_return']:.3f}, "
              f"greedy {e['greedy']['episode_return']:.3f}, random {e['random']['episode_return']:.3f}, "
              f"ratio {e['ratio']:.2f}")
    print(json.dumps({k: v for k, v in result.items() if k != "evaluation"}, default=str))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--only", choices=["split", "levers", "explorer", "minimal"], default=None)
    p.add_argument("--minutes", type=float, default=10.0, help="Explorer training budget")
    p.add_argument("--minimal-minutes", type=float, default=3.0)
    p.add_argument("--out", default="runs/benchmark")
    a = p.parse_args()
    if a.only in (None, "split"):
        split()
    if a.only == "levers":
        levers()
    if a.only in (None, "explorer"):
        explorer(a.minutes, os.path.join(a.out, f"explorer-{time.strftime('%Y%m%d-%H%M%S')}"))
    if a.only in (None, "minimal"):
        minimal(a.minimal_minutes, os.path.join(a.out, f"minimal-{time.strftime('%Y%m%d-%H%M%S')}"))


if __name__ == "__main__":
    main()
