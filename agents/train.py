"""The training command: PPO on a megastep_jax env, with progress, checkpoints and outputs.

::

    python -m agents.train --env explorer --minutes 10 --out runs/explorer
    python -m agents.train --out runs/explorer --resume --minutes 5     # continue it
    python -m agents.train ... --out runs/explorer --if-exists resume   # resume if it exists

Several processes (hosts) join one run with ``--coordinator HOST:PORT --num-processes N
--process-id I`` (``jax.distributed``); process 0 writes the outputs.

``--resume`` (or ``--if-exists resume``) with neither ``--minutes`` nor ``--updates``
trains for 10 more minutes; ``--if-exists new`` starts a fresh run in ``OUT-2``, ``OUT-3``...

Writes into ``--out``:

- ``config.json``: every setting (``--resume`` reads it back, so a resumed run continues
  with the same config whatever else the command line says, apart from time budgets and
  output options);
- ``metrics.csv``: one row per PPO update (env steps, wall time, returns, losses...);
- ``checkpoint.msgpack``: the whole training state after the latest chunk of updates;
  resuming from it continues bit for bit as if uninterrupted;
- ``curve.png``: the learning curve, with the evaluation of the trained and a random
  policy on held-out plans;
- ``video.mp4``: the trained agent on a held-out plan (plan view + first-person strips);
- ``eval.json``: the evaluation figures.

Envs: ``explorer`` (procedural floorplans, training split; evaluated on the test split),
``minimal`` (the box, with a reward of -1 per collision and +0.05 per unobstructed
translation, so that there is something to learn; evaluated on the same box), ``deathmatch``, or ``package.module:factory`` (a
callable returning an env, used for training and evaluation alike).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib
import json
import math
import os
import sys
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from . import ppo
from .evaluate import make_evaluate, record_video
from .networks import INTAKES

__all__ = ["CollisionPenalty", "build_parser", "make_envs", "main", "parse_args", "parse_convs"]


# -- envs -----------------------------------------------------------------------------

def _wrapper_base():
    from megastep_jax.wrappers import Wrapper
    return Wrapper


class CollisionPenalty(_wrapper_base()):
    """Rewards -1 per agent per step that a movement action is stopped by a collision.

    Minimal has no reward; this gives it one. With megastep's default ``stop``
    collisions, physics zeroes the velocity of an agent that hit something, so an agent
    that chose to translate (actions 1-4) and ends the step at rest has collided.
    ``info`` gains ``collision`` (fraction of agents that collided) and ``moving``
    (fraction that chose to translate).

    Penalising collisions alone makes standing still optimal; ``move_reward`` pays each
    translation that is not stopped, so the agent is rewarded for moving without hitting
    anything.

    It transforms the raw ``step_env`` (so the state it reads is the one before any
    auto-reset) and keeps the base class's auto-resetting ``step``, so it also works under
    :class:`~megastep_jax.envs.base.Batched` with ``reset_ratio > 1``.
    """

    def __init__(self, env, move_reward: float = 0.0):
        super().__init__(env)
        self.move_reward = float(move_reward)

    def reset_env(self, key, params):
        return self.env.reset_env(key, params)

    def step_env(self, key, state, action, params):
        obs, state, reward, terminated, truncated, info = self.env.step_env(key, state, action, params)
        moving = (action["movement"] >= 1) & (action["movement"] <= 4)
        at_rest = jnp.all(state.agents.velocity[0] == 0, axis=-1)
        collided = moving & at_rest
        info = dict(info, collision=jnp.mean(collided), moving=jnp.mean(moving))
        reward = reward - collided + self.move_reward * (moving & ~collided)
        return obs, state, reward.astype(jnp.float32), terminated, truncated, info

    def reset(self, key, params=None):
        params = self.default_params if params is None else params
        return self.reset_env(key, params)

    def step(self, key, state, action, params=None):
        from megastep_jax.envs.base import Environment
        return Environment.step(self, key, state, action, params)

    def state(self, env_state, params=None):
        return self.env.state(env_state, params)  # the state is the inner env's, unwrapped


def make_envs(name: str, *, res: Optional[int] = None, subsample: Optional[int] = None,
              n_plans: int = 64, n_test_plans: int = 16, backend: str = "kernel", seed: int = 0,
              budget_obs: bool = False):
    """(training env, held-out env) for an env name.

    Args:
        name: ``explorer``, ``minimal``, ``deathmatch`` or ``module:factory``.
        res, subsample: render resolution and pixels averaged per observation pixel
            (None: the env's defaults).
        n_plans, n_test_plans: procedural floorplans for training and for evaluation.
        backend: ``kernel`` or ``reference``.
        seed: seeds the plans, textures and spawns.
        budget_obs: Explorer only: observe the steps left before the episode ends
            (``Explorer(budget_obs=True)``); both envs get it, so evaluation sees what
            training saw.
    """
    kw = dict(backend=backend, seed=seed)
    if res is not None:
        kw["res"] = res
    if name == "explorer":
        from megastep_jax import floorplans
        from megastep_jax.envs import Explorer
        if subsample is not None:
            kw["subsample"] = subsample
        kw["budget_obs"] = bool(budget_obs)
        return (Explorer(geometries=floorplans.sample(n_plans, "training", seed), **kw),
                Explorer(geometries=floorplans.sample(n_test_plans, "test", seed), **kw))
    if name == "deathmatch":
        from megastep_jax import floorplans
        from megastep_jax.envs import Deathmatch
        if subsample is not None:
            kw["subsample"] = subsample
        return (Deathmatch(geometries=floorplans.sample(n_plans, "training", seed), **kw),
                Deathmatch(geometries=floorplans.sample(n_test_plans, "test", seed), **kw))
    if name == "minimal":
        from megastep_jax.envs import Minimal
        env = CollisionPenalty(Minimal(**kw), move_reward=0.05)
        return env, env
    if ":" in name:
        module, attr = name.split(":", 1)
        env = getattr(importlib.import_module(module), attr)()
        return env, env
    raise ValueError(f"env: expected explorer, minimal, deathmatch or module:factory, got {name!r}")


# -- command line ---------------------------------------------------------------------

# --resume with neither --minutes nor --updates trains this long.
RESUME_MINUTES = 10.0

# Arguments that define the run; --resume takes them from config.json.
RUN_ARGS = ("env", "seed", "res", "subsample", "plans", "test_plans", "backend", "n_envs",
            "n_steps", "epochs", "minibatches", "lr", "anneal", "width", "core", "ent_coef",
            "vf_coef", "gamma", "gae_lambda", "clip_eps", "max_grad_norm", "updates",
            "small_convs", "bootstrap_truncated", "reset_ratio", "intake", "normalize_rewards",
            "anneal_time", "budget", "prev_action_reward", "critic_keys", "stack", "convs",
            "ent_coef_final", "obs_norm")

# What a run stored before these flags existed ran with (their defaults may differ now).
BEFORE_FLAG = {"budget": "off", "prev_action_reward": False, "critic_keys": "", "stack": 1,
               "convs": None, "ent_coef_final": None,
               "obs_norm": "", "intake": "conv"}  # before --intake: flax's nn.Conv

# --budget: who sees Explorer's budget observation.
BUDGET_MODES = ("off", "critic", "both")


def parse_args(argv=None) -> argparse.Namespace:
    """The command's arguments (see ``python -m agents.train --help``)."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.minutes is None and args.updates is None and not args.resume:
        p.error("give --minutes or --updates (or both)")
    if args.chunk <= 0:
        p.error("--chunk: expected a positive int")
    return args


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser; every flag has a help line."""
    p = argparse.ArgumentParser(prog="python -m agents.train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env", default="explorer", help="explorer, minimal, deathmatch or module:factory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget for training in this session (compilation included); "
                        f"with --resume and no --updates, {RESUME_MINUTES:g} if unset")
    p.add_argument("--updates", type=int, default=None, help="stop after this many PPO updates in all")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--if-exists", choices=["error", "resume", "new"], default="error",
                   help="when --out already holds a run (and --resume is not given): stop with an "
                        "error, resume it, or start a new run in the first free --out-N")
    p.add_argument("--seed", type=int, default=0, help="seeds the plans, the network and the envs")
    p.add_argument("--res", type=int, default=None, help="render resolution (env default if unset)")
    p.add_argument("--subsample", type=int, default=None, help="pixels averaged per observation pixel")
    p.add_argument("--plans", type=int, default=32, help="training floorplans")
    p.add_argument("--test-plans", type=int, default=16, help="held-out floorplans for evaluation")
    p.add_argument("--backend", default="kernel", choices=["kernel", "reference"],
                   help="compiled kernels or the jax.numpy reference")
    p.add_argument("--n-envs", type=int, default=64, help="envs stepped in parallel")
    p.add_argument("--n-steps", type=int, default=32, help="rollout length per update")
    p.add_argument("--epochs", type=int, default=1, help="passes over each rollout")
    p.add_argument("--minibatches", type=int, default=4, help="minibatches per epoch")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="Adam learning rate (annealed over --minutes by default, see --anneal-time; "
                        "a run with --updates alone trains at this constant lr unless --anneal)")
    p.add_argument("--anneal", action="store_true", help="anneal the lr to 0 over --updates")
    p.add_argument("--anneal-time", action=argparse.BooleanOptionalAction, default=True,
                   help="with --minutes, decay the lr linearly to 0 over this session's training "
                        "time (set before each chunk from the time used; not reproducible bit for "
                        "bit, as the time budget itself is not)")
    p.add_argument("--width", type=int, default=64, help="features of the network's layers")
    p.add_argument("--core", default="gru", choices=["lstm", "gru", "mlp"],
                   help="the core between the intake and the heads: gru (memory; learnt Explorer "
                        "best at equal time on CPU), lstm (memory, slower) or mlp (none)")
    p.add_argument("--small-convs", action="store_true", help="8- and 16-feature convolutions")
    p.add_argument("--convs", default=None, metavar="F:K:S,...",
                   help="the image intake's 1D convolutions as features:kernel:stride per layer "
                        "(overrides --small-convs), or 'none' for dense layers straight on the strip")
    p.add_argument("--stack", type=int, default=1,
                   help="the core sees the intake's features of this many steps of the episode "
                        "(a frame stack inside the agent; 1: the current step alone)")
    p.add_argument("--intake", default="merged", choices=INTAKES,
                   help="image convolutions as matrix products (faster on CPU), nn.Conv, or matrix "
                        "products with a dict's same-sized images stacked into one strip, or that "
                        "and its vectors concatenated into one (the default: the learner's fewest "
                        "operations; with the GRU core it learnt Explorer at least as well at equal "
                        "time)")
    p.add_argument("--ent-coef", type=float, default=0.03, help="weight of the entropy bonus")
    p.add_argument("--obs-norm", default="", metavar="KEY:SHIFT:SCALE,...",
                   help="the network reads observation KEY as (KEY - SHIFT) / SCALE "
                        "(PPOConfig.obs_norm), e.g. imu:0:0.05,prev_reward:0:0.05")
    p.add_argument("--ent-coef-final", type=float, default=None,
                   help="move the entropy weight linearly from --ent-coef to this value as the lr "
                        "is annealed (over --updates with --anneal, over the time with "
                        "--anneal-time); constant --ent-coef if unset")
    p.add_argument("--vf-coef", type=float, default=0.5, help="weight of the value loss")
    p.add_argument("--gamma", type=float, default=0.99, help="discount")
    p.add_argument("--gae-lambda", type=float, default=0.95, help="GAE's lambda")
    p.add_argument("--clip-eps", type=float, default=0.2, help="PPO's ratio (and value) clip")
    p.add_argument("--max-grad-norm", type=float, default=0.5, help="global gradient-norm clip")
    p.add_argument("--normalize-rewards", action=argparse.BooleanOptionalAction, default=True,
                   help="scale rewards by the running std of the discounted return (PPOConfig.normalize_rewards)")
    p.add_argument("--prev-action-reward", action=argparse.BooleanOptionalAction, default=True,
                   help="the network also sees the previous action and reward "
                        "(PPOConfig.prev_action_reward)")
    p.add_argument("--critic-keys", default="",
                   help="comma-separated observation keys that only the critic sees, e.g. budget "
                        "(PPOConfig.critic_keys)")
    p.add_argument("--budget", choices=BUDGET_MODES, default="off",
                   help="explorer only (ignored otherwise): the steps the episode has left unless new "
                        "walls are seen (Explorer(budget_obs=True)) as an input of the critic alone "
                        "(asymmetric actor-critic; the policy acts from the camera and IMU only), of "
                        "both, or of neither")
    p.add_argument("--bootstrap-truncated", action="store_true",
                   help="bootstrap from the value of the last observation of a truncated episode")
    p.add_argument("--reset-ratio", type=int, default=8,
                   help="envs per fresh episode rendered each step (see PPOConfig.reset_ratio)")
    p.add_argument("--chunk", type=int, default=20, help="updates per compiled call (progress granularity)")
    p.add_argument("--eval-envs", type=int, default=32, help="held-out episodes scored per policy")
    p.add_argument("--eval-steps", type=int, default=10_000,
                   help="the most steps per evaluation env; it stops as soon as every env's first "
                        "episode has ended (a trained Explorer agent's can last ~7,000 steps)")
    p.add_argument("--video-steps", type=int, default=300, help="steps in the video")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    p.add_argument("--no-video", action="store_true", help="skip the video")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("more than one process (jax.distributed; or JAX_COORDINATOR_ADDRESS, "
                             "JAX_NUM_PROCESSES, JAX_PROCESS_ID)")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="address of process 0, which every process joins")
    g.add_argument("--num-processes", type=int, default=None, help="processes in the run")
    g.add_argument("--process-id", type=int, default=None, help="this process's index, 0 writes the outputs")
    return p


def join_processes(args) -> None:
    """Joins the run's processes with ``jax.distributed`` if a coordinator is given.

    Envs are then sharded over every process's devices; all processes run the same
    updates and process 0 alone writes. On CPUs the collectives go through gloo.
    """
    coordinator = args.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not coordinator:
        return
    n = args.num_processes if args.num_processes is not None else os.environ.get("JAX_NUM_PROCESSES")
    i = args.process_id if args.process_id is not None else os.environ.get("JAX_PROCESS_ID")
    if n is None or i is None:
        raise SystemExit("--coordinator: also give --num-processes and --process-id "
                         "(or JAX_NUM_PROCESSES and JAX_PROCESS_ID)")
    n, i = int(n), int(i)
    if n <= 0 or not 0 <= i < n:
        raise SystemExit(f"--process-id: expected 0 <= id < --num-processes {n}, got {i}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=n, process_id=i)


def critic_keys_of(args) -> tuple:
    """``--critic-keys``, with ``budget`` added for ``--budget critic`` on Explorer."""
    keys = tuple(k for k in (args.critic_keys or "").split(",") if k)
    if args.env == "explorer" and args.budget == "critic" and "budget" not in keys:
        keys += ("budget",)
    return keys


# --small-convs, as --convs would write it.
SMALL_CONVS = "8:8:4,16:4:2"


def parse_convs(spec: str) -> tuple:
    """``--convs``: ``"F:K:S,..."`` (features, kernel, stride per layer) or ``"none"`` ->
    the image intakes' ``image_kwargs``.

    Raises:
        ValueError: naming ``--convs`` for anything else.
    """
    layers = []
    if spec.strip().lower() != "none":
        for part in spec.split(","):
            try:
                f, k, s = (int(v) for v in part.split(":"))
            except ValueError:
                f = k = s = 0
            if f <= 0 or k <= 0 or s <= 0:
                raise ValueError(f"--convs: expected 'none' or features:kernel:stride positive ints "
                                 f"per layer, comma-separated, got {spec!r}")
            layers.append((f, k, s))
    return (("conv_features", tuple(l[0] for l in layers)), ("conv_kernels", tuple(l[1] for l in layers)),
            ("conv_strides", tuple(l[2] for l in layers)))


def parse_obs_norm(spec: str) -> tuple:
    """``--obs-norm``'s ``KEY:SHIFT:SCALE,...`` as PPOConfig.obs_norm's triples ('' for none)."""
    if not spec:
        return ()
    out = []
    for part in spec.split(","):
        bits = part.split(":")
        try:
            key, shift, scale = bits[0], float(bits[1]), float(bits[2])
        except (IndexError, ValueError):
            raise ValueError(f"--obs-norm: expected KEY:SHIFT:SCALE per key, comma-separated, "
                             f"got {spec!r}") from None
        if len(bits) != 3 or not key or not (scale > 0 and math.isfinite(scale) and math.isfinite(shift)):
            raise ValueError(f"--obs-norm: expected KEY:SHIFT:SCALE per key (finite SHIFT, positive "
                             f"finite SCALE), comma-separated, got {spec!r}")
        out.append((key, shift, scale))
    return tuple(out)


def config_of(args) -> ppo.PPOConfig:
    image_kwargs = parse_convs(SMALL_CONVS) if args.small_convs else ()
    if args.convs is not None:
        image_kwargs = parse_convs(args.convs)
    return ppo.PPOConfig(
        n_envs=args.n_envs, n_steps=args.n_steps, n_updates=args.updates or 1_000_000,
        n_epochs=args.epochs, n_minibatches=args.minibatches, lr=args.lr,
        anneal_lr=bool(args.anneal and args.updates), gamma=args.gamma,
        gae_lambda=args.gae_lambda, clip_eps=args.clip_eps, vf_coef=args.vf_coef,
        ent_coef=args.ent_coef, ent_coef_final=args.ent_coef_final, max_grad_norm=args.max_grad_norm,
        bootstrap_truncated=args.bootstrap_truncated, width=args.width, core=args.core,
        image_kwargs=image_kwargs, reset_ratio=args.reset_ratio, intake=args.intake,
        normalize_rewards=bool(args.normalize_rewards),
        prev_action_reward=bool(args.prev_action_reward),
        critic_keys=critic_keys_of(args), stack=args.stack, obs_norm=parse_obs_norm(args.obs_norm))


def _read_rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _append_rows(path: str, rows: list[dict], new: list[dict]) -> None:
    """Appends ``new`` (already the last rows of ``rows``) to the CSV at ``path``; rewrites
    the whole file (all ``rows``) where it is missing or its header lacks a field of ``new``.
    Appending keeps the cost of a chunk's write independent of the run's length."""
    header = None
    if os.path.exists(path):
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
    if not new:
        return
    if header is None or any(k not in header for r in new for k in r):
        _write_rows(path, rows)
        return
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=header).writerows(new)


def _write_rows(path: str, rows: list[dict]) -> None:
    if not rows:
        return
    fields = list(rows[0].keys())
    for r in rows:
        fields += [k for k in r if k not in fields]
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def plot_curve(rows: list[dict], path: str, title: str, evals: Optional[dict] = None) -> str:
    """Learning curve: episode return (and its running mean) against env steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.array([float(r["env_steps"]) for r in rows])
    y = np.array([float(r["episode_return"]) if r["episode_return"] not in ("", "nan") else np.nan
                  for r in rows])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(x, y, ".", color="C0", alpha=0.3, ms=3, label="per update")
    ok = ~np.isnan(y)
    if ok.sum() > 0:
        k = max(1, ok.sum() // 20)
        smooth = np.convolve(y[ok], np.ones(k) / k, mode="valid")
        ax.plot(x[ok][k - 1:], smooth, color="C0", label=f"running mean ({k})")
    if evals:
        for name, colour in (("trained", "C2"), ("random", "C3")):
            if name in evals:
                ax.axhline(evals[name]["episode_return"], color=colour, ls="--",
                           label=f"{name}, held-out: {evals[name]['episode_return']:.2f}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _agreed(go: bool) -> bool:
    """Process 0's ``go`` in every process (clocks differ: all must run the same chunks)."""
    if jax.process_count() == 1:
        return go
    from jax.experimental import multihost_utils  # deferred: only for jax.distributed
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(go)))


def _agreed_float(x: float) -> float:
    """Process 0's ``x`` in every process."""
    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils  # deferred: only for jax.distributed
    return float(multihost_utils.broadcast_one_to_all(np.asarray(x, np.float32)))


def _scalar(x) -> float:
    return float(np.asarray(x))


def main(argv=None) -> dict:
    """Runs the command; returns a dict of the output paths and final figures."""
    args = parse_args(argv)
    join_processes(args)
    writer = jax.process_index() == 0  # under jax.distributed, process 0 alone writes
    out = args.out
    os.makedirs(out, exist_ok=True)
    paths = {k: os.path.join(out, v) for k, v in dict(
        config="config.json", metrics="metrics.csv", checkpoint="checkpoint.msgpack",
        curve="curve.png", video="video.mp4", eval="eval.json").items()}

    cli_updates = args.updates
    if not args.resume and os.path.exists(paths["checkpoint"]):
        if args.if_exists == "resume":
            print(f"{out} already holds a run: resuming it (its stored settings; "
                  f"--if-exists new starts a fresh run instead)", file=sys.stderr)
            args.resume = True
        elif args.if_exists == "new":
            i = 2
            while os.path.exists(os.path.join(f"{out.rstrip(os.sep)}-{i}", "checkpoint.msgpack")):
                i += 1
            out = args.out = f"{out.rstrip(os.sep)}-{i}"
            print(f"{paths['checkpoint']} exists: starting a new run in {out}", file=sys.stderr)
            os.makedirs(out, exist_ok=True)
            paths = {k: os.path.join(out, os.path.basename(v)) for k, v in paths.items()}
        else:
            raise SystemExit(f"--out: {out} already holds a run; pass --resume, "
                             "--if-exists resume|new, or another --out")
    if args.resume:
        if not os.path.exists(paths["checkpoint"]):
            raise SystemExit(f"--resume: no checkpoint in {out}")
        with open(paths["config"]) as f:
            stored = json.load(f)["args"]
        defaults = build_parser().parse_args(["--out", out, "--updates", "1"])
        for k in RUN_ARGS:  # runs stored before a flag existed get what they ran with
            setattr(args, k, stored.get(k, BEFORE_FLAG.get(k, getattr(defaults, k))))
        if args.minutes is None and cli_updates is None:
            args.minutes = RESUME_MINUTES
            print(f"--resume without --minutes or --updates: training for {RESUME_MINUTES:g} minutes",
                  file=sys.stderr)

    config = config_of(args)
    env, test_env = make_envs(args.env, res=args.res, subsample=args.subsample, n_plans=args.plans,
                              n_test_plans=args.test_plans, backend=args.backend, seed=args.seed,
                              budget_obs=args.env == "explorer" and args.budget != "off")
    env_params = env.default_params
    trainer = ppo.make_trainer(config, env)
    key = jax.random.PRNGKey(args.seed)
    if not args.resume and writer:
        with open(paths["config"], "w") as f:
            json.dump(dict(args={k: getattr(args, k) for k in RUN_ARGS},
                           config=dataclasses.asdict(config), devices=[str(d) for d in jax.devices()]),
                      f, indent=2, default=str)

    runner = trainer.init(key, env_params)
    rows = []
    if args.resume:
        runner = ppo.load(paths["checkpoint"], runner)
        done = int(runner.update)
        rows = [r for r in _read_rows(paths["metrics"]) if int(r["update"]) <= done]
    if not (args.anneal_time and args.minutes is not None):
        # a session without a time budget to anneal over trains at the full lr (a resumed
        # time-annealed run stored the last chunk's scale)
        runner = runner.replace(lr_scale=jnp.ones((), jnp.float32))
    start_update = int(runner.update)
    if writer and args.resume:
        _write_rows(paths["metrics"], rows)  # drops rows past the checkpoint; then appends
    elif writer and os.path.exists(paths["metrics"]):
        os.remove(paths["metrics"])  # a run that never saved a checkpoint; start afresh
    # On resume, --updates may extend the run; the config (and any lr annealing) is the stored one.
    target = cli_updates if cli_updates is not None else (args.updates or math.inf)
    budget = args.minutes * 60 if args.minutes is not None else math.inf
    t0 = time.time()
    elapsed0 = float(rows[-1]["time"]) if rows else 0.0

    # The header goes out (flushed) before the bar draws itself on stderr.
    print(f"{args.env}: {env.n_agents} agent(s) per env, {config.n_envs} envs, "
          f"{config.steps_per_update} env steps per update, devices {jax.devices()}",
          file=sys.stderr, flush=True)
    from tqdm.auto import tqdm
    total = (target - start_update) if target < math.inf else None
    bar = tqdm(total=total, unit="update", disable=args.no_progress or not writer, dynamic_ncols=True,
               desc=f"{args.env} PPO")
    last_return = math.nan
    while _agreed(int(runner.update) < target and time.time() - t0 < budget):
        n = int(min(args.chunk, target - int(runner.update)))
        if args.anneal_time and budget < math.inf:
            # what is left of the session's budget, the same in every process
            left = _agreed_float(max(0.0, 1.0 - (time.time() - t0) / budget))
            runner = runner.replace(lr_scale=jnp.float32(left))
        tic = time.time()
        try:
            runner, metrics = trainer.run(runner, env_params, n)
            metrics = ppo.to_host(metrics)
        except KeyboardInterrupt:
            # The checkpoint and metrics hold the last finished chunk; still write the outputs.
            print(f"\ninterrupted: keeping update {int(runner.update)}; --resume continues from it",
                  file=sys.stderr)
            break
        dt = time.time() - tic
        now = elapsed0 + time.time() - t0
        first_new = len(rows)
        for i in range(n):
            row = {k: _scalar(v[i]) for k, v in metrics.items()}
            row["update"] = int(row["update"])
            row["env_steps"] = row["update"] * config.steps_per_update
            row["time"] = round(now - dt * (n - 1 - i) / n, 3)
            row["steps_per_s"] = n * config.steps_per_update / dt
            rows.append(row)
        returns = np.asarray(metrics["episode_return"])
        if np.any(~np.isnan(returns)):
            last_return = float(np.nanmean(returns))
        # The checkpoint and the metrics always describe the same update.
        ppo.save(paths["checkpoint"], runner)  # every process gathers, process 0 writes
        if writer:
            _append_rows(paths["metrics"], rows, rows[first_new:])
        bar.update(n)
        bar.set_postfix({"steps/s": f"{n * config.steps_per_update / dt:,.0f}",
                         "return": "-" if math.isnan(last_return) else f"{last_return:.3g}",
                         "env steps": f"{int(runner.update) * config.steps_per_update:,}"})
    bar.close()

    updates = int(ppo.to_host(runner.update))
    result = dict(paths, updates=updates, env_steps=updates * config.steps_per_update,
                  train_return=last_return)
    if not writer:
        return result
    net_params = ppo.to_host(runner.params)
    evals = {}
    if not args.no_eval:
        print("evaluating on held-out plans...", file=sys.stderr)
        k_eval = jax.random.fold_in(key, 1)
        for name, policy in (("trained", "sample"), ("greedy", "greedy"), ("random", "random")):
            ev = make_evaluate(trainer.network, test_env, args.eval_envs, args.eval_steps, policy,
                               reset_ratio=args.eval_envs)  # only first episodes are scored
            evals[name] = {k: _scalar(v) for k, v in ev(k_eval, net_params, test_env.default_params).items()}
        evals["ratio"] = evals["trained"]["episode_return"] / evals["random"]["episode_return"] \
            if evals["random"]["episode_return"] != 0 else math.nan
        with open(paths["eval"], "w") as f:
            json.dump(evals, f, indent=2)
        result["evaluation"] = evals
    if rows:
        plot_curve(rows, paths["curve"], f"PPO on {args.env}", evals or None)
    if not args.no_video:
        print("recording video...", file=sys.stderr)
        record_video(trainer.network, net_params, test_env, test_env.default_params,
                     jax.random.fold_in(key, 2), args.video_steps, paths["video"])
    else:
        result.pop("video")

    print(f"\n{result['updates']} updates, {result['env_steps']:,} env steps", file=sys.stderr)
    for name in ("trained", "greedy", "random"):
        if name in evals:
            e = evals[name]
            print(f"held-out {name:>7}: episode return {e['episode_return']:.3f} "
                  f"(reward/step {e['reward']:.4f}, {int(e['steps'])} steps, unfinished "
                  f"{e['unfinished']:.0%})", file=sys.stderr)
    for k in ("metrics", "checkpoint", "curve", "video", "eval"):
        if k in result and os.path.exists(result[k]):
            print(f"{k:>10}: {result[k]}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
