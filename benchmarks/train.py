"""Training benchmarks: where an update's time goes, the Explorer demo run and Minimal.

    PYTHONPATH=. python benchmarks/train.py                      # everything (~25 min on CPU)
    PYTHONPATH=. python benchmarks/train.py --only split         # env vs learner time only
    PYTHONPATH=. python benchmarks/train.py --only levers        # learner levers side by side
    PYTHONPATH=. python benchmarks/train.py --only levers3       # the third pass's levers

1. ``split``: for the demo's Explorer settings, seconds per update spent stepping envs
   with random actions alone, acting (envs + policy forward passes, i.e. the rollout) and
   in a whole update, each the fastest of 10 calls; the learner's share is update -
   rollout. Also end-to-end env steps/s through ``trainer.run`` (what the command line
   runs; the fastest of 3 calls of 4 updates).
   ``levers``: the same for the learner's levers side by side.
2. ``explorer``: the demo command (``python -m agents.train --env explorer ...``) for
   ``--minutes``; prints env steps/s and the held-out return of the trained policy
   against a random one (issue 11's goal: at least 4x, curve not falling).
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

# The demo's settings: `make demo`'s command line; agents/train.py's defaults fill in the rest.
DEMO = ["--env", "explorer", "--res", "128", "--subsample", "2", "--small-convs"]


def _timed(f, *args, repeats=10):
    """Seconds of the fastest of ``repeats`` calls after compiling (the least disturbed by
    other work on the machine; the split's shares are differences of these)."""
    out = jax.block_until_ready(f(*args))  # compile
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        out = jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - tic)
    return best, out


def _measure(argv, repeats=10, run_updates=4):
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
    t_run = float("inf")
    for _ in range(3):
        tic = time.perf_counter()
        jax.block_until_ready(trainer.run(runner, params, run_updates))
        t_run = min(t_run, (time.perf_counter() - tic) / run_updates)
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
BEFORE = ["--intake", "unfold", "--width", "128", "--epochs", "4", "--core", "mlp"]
LEVERS = [
    ("before: unfold, width 128, 4 epochs", BEFORE),
    ("width 64", BEFORE + ["--width", "64"]),
    ("width 64, 2 epochs", BEFORE + ["--width", "64", "--epochs", "2"]),
    ("width 64, stacked intake", BEFORE + ["--width", "64", "--intake", "stacked"]),
    ("width 64, stacked, 2 epochs", BEFORE + ["--width", "64", "--intake", "stacked", "--epochs", "2"]),
    ("  ... 256 envs x 8 steps", BEFORE + ["--width", "64", "--intake", "stacked", "--epochs", "2",
                                           "--n-envs", "256", "--n-steps", "8"]),
    ("  ... LSTM core", BEFORE + ["--width", "64", "--intake", "stacked", "--epochs", "2",
                                 "--core", "lstm"]),
    ("  ... reset ratio 1 (exact auto-reset)", BEFORE + ["--width", "64", "--intake", "stacked",
                                                        "--epochs", "2", "--reset-ratio", "1"]),
    ("  ... 1 epoch", BEFORE + ["--width", "64", "--intake", "stacked", "--epochs", "1"]),
    ("the demo's defaults", []),
]

# The third pass (issue 11 part 5): intake designs and a frame stack against the defaults.
THIRD = [
    ("second pass's defaults (no stack)", ["--stack", "1"]),
    ("merged intake (vectors as one)", ["--stack", "1", "--intake", "merged"]),
    ("strided convs 8:8:8,16:2:2", ["--stack", "1", "--convs", "8:8:8,16:2:2"]),
    ("merged + strided convs", ["--stack", "1", "--intake", "merged", "--convs", "8:8:8,16:2:2"]),
    ("dense layers on the strip (no convs)", ["--stack", "1", "--convs", "none"]),
    ("frame stack 4 (the demo's defaults)", []),
    ("frame stack 4, merged + strided convs", ["--intake", "merged", "--convs", "8:8:8,16:2:2"]),
]


def levers(rounds: int = 7, run_updates: int = 2, which=None):
    """Each lever's rollout and end-to-end time per update, interleaved over ``rounds``
    rounds, keeping each one's fastest round (the least disturbed by other load)."""
    built = []
    for name, extra in (LEVERS if which is None else which):
        args = train.parse_args(DEMO + extra + ["--out", "unused", "--updates", "1"])
        config = train.config_of(args)
        env, _ = train.make_envs("explorer", res=args.res, subsample=args.subsample,
                                 n_plans=args.plans, n_test_plans=1, seed=0)
        trainer = ppo.make_trainer(config, env)
        params = env.default_params
        runner = trainer.init(jax.random.PRNGKey(0), params)
        rollout = jax.jit(lambda r, trainer=trainer, params=params: trainer.rollout(r, params)[0])
        jax.block_until_ready(rollout(runner))
        runner, _ = jax.block_until_ready(trainer.run(runner, params, run_updates))
        built.append((name, config, trainer, params, runner, rollout))
        print(f"compiled: {name}", flush=True)
    best = {name: dict(rollout=float("inf"), run=float("inf")) for name, *_ in built}
    for _ in range(rounds):
        for name, config, trainer, params, runner, rollout in built:
            tic = time.perf_counter()
            jax.block_until_ready(rollout(runner))
            best[name]["rollout"] = min(best[name]["rollout"], time.perf_counter() - tic)
            tic = time.perf_counter()
            jax.block_until_ready(trainer.run(runner, params, run_updates))
            best[name]["run"] = min(best[name]["run"], (time.perf_counter() - tic) / run_updates)
    base = None
    print(f"\n== levers: fastest of {rounds} interleaved rounds, per update; learner = update - rollout")
    for name, config, *_ in built:
        t = best[name]
        per_step = t["run"] / config.steps_per_update
        base = base or per_step
        print(f"{name:36s} rollout {t['rollout']:6.3f} s  update {t['run']:6.3f} s  "
              f"{config.steps_per_update / t['run']:8,.0f} env steps/s  x{base / per_step:4.2f}  "
              f"learner {max(t['run'] - t['rollout'], 0) / t['run']:4.0%}", flush=True)


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
    p.add_argument("--only", choices=["split", "levers", "levers3", "explorer", "minimal"], default=None,
                   help="one part; levers3: the third pass's intake and frame-stack levers")
    p.add_argument("--minutes", type=float, default=10.0, help="Explorer training budget")
    p.add_argument("--minimal-minutes", type=float, default=3.0)
    p.add_argument("--out", default="runs/benchmark")
    a = p.parse_args()
    if a.only in (None, "split"):
        split()
    if a.only == "levers":
        levers()
    if a.only == "levers3":
        levers(which=THIRD)
    if a.only in (None, "explorer"):
        explorer(a.minutes, os.path.join(a.out, f"explorer-{time.strftime('%Y%m%d-%H%M%S')}"))
    if a.only in (None, "minimal"):
        minimal(a.minimal_minutes, os.path.join(a.out, f"minimal-{time.strftime('%Y%m%d-%H%M%S')}"))


if __name__ == "__main__":
    main()
