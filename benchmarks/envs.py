"""Environment throughput: the full env step next to the bare kernels, in one run.

For each env, one jitted call runs ``--steps`` auto-resetting steps of a
:class:`~megastep_jax.envs.Batched` env with its defaults (``reset_ratio=1``, i.e.
``jax.vmap(env.step)``) and uniformly random actions. Next to it, on the same plans,
resolution and env count, the *bare kernels*: physics then render of every env through
the same scene runtime, moved by the env's movement with random actions, and nothing
else. The ratio full/bare says
what the env adds to the kernels. The first call (compile) is not timed; the best of
``--repeats`` calls is.

Reported: frames/s (agent observations per second, env steps x agents: megastep's figure
of merit), the first-call compile time of a jitted ``vmap(env.step)``, and memory per env
(its state, plus the step's temporaries as XLA's memory analysis gives them, divided by
the env count). ``--profile`` also times the parts of a step one by one (see
BENCHMARKS.md).

Examples::

    python benchmarks/envs.py                            # the issue's sizes (slow on 2 cores)
    python benchmarks/envs.py --quick                    # small sizes, a smoke run
    python benchmarks/envs.py --envs explorer --profile  # where an Explorer step's time goes
"""
from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp

from megastep_jax import spaces, toys
from megastep_jax.envs import Batched, Deathmatch, Explorer, Minimal

DEFAULT_N_ENVS = {"minimal": 4096, "explorer": 1024, "deathmatch": 256}


def make(name: str, backend: str, res: int | None, geometries: str, n_agents: int | None,
         n_plans: int):
    geoms = [toys.box(), toys.room_with_column()] if geometries == "toys" else None
    if name == "minimal":
        return Minimal(res=res or 64, backend=backend)
    if name == "explorer":
        return Explorer(res=res or 256, subsample=4, geometries=geoms, n_geometries=n_plans,
                        backend=backend)
    if name == "deathmatch":
        return Deathmatch(n_agents=n_agents or 4, res=res or 512, subsample=4, geometries=geoms,
                          n_geometries=n_plans, backend=backend)
    raise ValueError(f"--envs: unknown env {name!r}; expected minimal, explorer or deathmatch")


def best_of(fn, args, repeats: int, cpu: bool = False) -> float:
    """Seconds of the fastest of ``repeats`` calls (after one untimed call).

    With ``cpu``, CPU seconds of this process (all threads) instead of wall-clock: the
    steadier figure on a shared machine.
    """
    clock = time.process_time if cpu else time.perf_counter
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        jax.block_until_ready(fn(*args))
        best = min(best, clock() - t0)
    return best


def full_step(env, n_envs: int, n_steps: int, repeats: int, key, cpu: bool = False):
    """(frames/s of the auto-resetting Batched step, batched state)."""
    batched = Batched(env, n_envs)
    params = env.default_params
    action_space = env.action_space(params)

    @jax.jit
    def run(key, state, obs):
        def body(carry, key):
            state, _ = carry
            k_act, k_step = jax.random.split(key)
            action = spaces.sample(action_space, k_act, (n_envs,))
            obs, state, reward, terminated, truncated, info = batched.step(k_step, state, action, params)
            # The observations are written out every step, as for a policy to read (else XLA
            # drops Minimal's render). Not reduced: XLA fuses the strips' averaging into a
            # reduction badly, which no policy does.
            return (state, obs), jnp.sum(reward)
        return jax.lax.scan(body, (state, obs), jax.random.split(key, n_steps))

    obs, state = jax.jit(batched.reset)(key, params)
    seconds = best_of(run, (key, state, obs), repeats, cpu)
    return n_envs * n_steps * env.n_agents / seconds, state


def bare_kernels(env, state, n_steps: int, repeats: int, key, cpu: bool = False) -> float:
    """frames/s of physics + render alone: every env in its own plan through the same
    runtime, agents moved by the env's movement module with random actions (so the kernels
    see the same motion as in the env), no observation, reward or reset."""
    scene, fov = env.scene, env.default_params.fov
    action_space = env.action_space(env.default_params)

    def one(geometry, agents, k):
        agents = env.movement.apply(agents, spaces.sample(action_space, k)["movement"], 10.0)
        agents, progress = scene.physics(geometry, agents, 10.0)
        r = scene.render(geometry, agents, fov)
        return agents, jnp.mean(r.screen) + jnp.mean(progress)

    n_envs = state.geometry.shape[0]

    @jax.jit
    def run(key, agents):
        def body(agents, k):
            return jax.vmap(one)(state.geometry, agents, jax.random.split(k, n_envs))
        return jax.lax.scan(body, agents, jax.random.split(key, n_steps))

    seconds = best_of(run, (key, state.agents), repeats, cpu)
    return n_envs * n_steps * env.n_agents / seconds


def compile_and_memory(env, state, n_envs: int):
    """(seconds to compile and run a first jitted vmap(env.step), state KB/env, step temp KB/env)."""
    params = env.default_params
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    keys = jax.random.split(jax.random.PRNGKey(1), n_envs)
    action = jnp.zeros((n_envs, env.n_agents), jnp.int32)
    t0 = time.perf_counter()
    jax.block_until_ready(step(keys, state, action, params))
    compile_s = time.perf_counter() - t0
    compiled = step.lower(keys, state, action, params).compile()
    state_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(state))
    temp = compiled.memory_analysis().temp_size_in_bytes
    return compile_s, state_bytes / n_envs / 1024, temp / n_envs / 1024


def profile(env, state, repeats: int, key, cpu: bool = False) -> list[tuple[str, float]]:
    """Microseconds per env of the parts of a step, each jitted and vmapped on its own."""
    params = env.default_params
    scene = env.scene
    E = state.geometry.shape[0]
    keys = jax.random.split(key, E)
    action = jnp.zeros((E, env.n_agents), jnp.int32)
    r = jax.jit(jax.vmap(lambda s: scene.render(s.geometry, s.agents, params.fov)))(state)
    parts = {
        "full step (vmap(env.step))": (jax.vmap(env.step, in_axes=(0, 0, 0, None)), (keys, state, action, params)),
        "transition (move + physics)": (jax.vmap(env.transition, in_axes=(0, 0, 0, None)), (keys, state, {"movement": action}, params)),
        "observe (render + obs + reward)": (jax.vmap(env.observe, in_axes=(0, None)), (state, params)),
        "init (fresh state: spawn gather)": (jax.vmap(env.init, in_axes=(0, None)), (keys, params)),
        "select fresh/old state (where)": (jax.vmap(lambda f, s, d: jax.tree_util.tree_map(
            lambda a, b: jnp.where(d, a, b), f, s)), (state, state, jnp.zeros(E, bool))),
        "physics alone": (jax.vmap(lambda s: scene.physics(s.geometry, s.agents, 10.0)), (state,)),
        "render alone": (jax.vmap(lambda s: scene.render(s.geometry, s.agents, params.fov)), (state,)),
        "obs modules (downsample rgb, d; imu)": (jax.vmap(lambda r, s: (env.rgb(r), env.depth(r), env.imu(s.agents))),
                                                 (r, state)),
    }
    if hasattr(state, "seen"):
        tex = jax.jit(jax.vmap(lambda s, r: scene.texels(s.geometry, r).reshape(-1)))(state, r)

        def sort_count(seen, texels):  # the seen update before the mark_seen kernel
            t = jax.lax.sort(texels, is_stable=False)
            distinct = jnp.concatenate([jnp.ones((1,), bool), t[1:] != t[:-1]])
            new = distinct & (t >= 0) & ~seen[jnp.maximum(t, 0)]
            seen = seen.at[jnp.where(texels >= 0, texels, seen.shape[0])].set(True, mode="drop")
            return seen, jnp.sum(new, dtype=jnp.int32)

        def full_sum(seen, t):
            seen = seen.at[jnp.where(t >= 0, t, seen.shape[0])].set(True, mode="drop")
            return seen, jnp.sum(seen, dtype=jnp.int32)

        mask = jnp.zeros((E, scene.n_texels), bool)
        parts["seen update: mark_seen kernel (now)"] = (jax.vmap(lambda s, r: scene.mark_seen(s.seen, s.geometry, r)), (state, r))
        parts["texel indices of pixels (before)"] = (jax.vmap(lambda s, r: scene.texels(s.geometry, r)), (state, r))
        parts["  + sort-dedup count over a bool mask"] = (jax.vmap(sort_count), (mask, tex))
        parts["  + or scatter + full sum"] = (jax.vmap(full_sum), (mask, tex))
    out = []
    for name, (fn, args) in parts.items():
        out.append((name, best_of(jax.jit(fn), args, repeats, cpu) / E * 1e6))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--envs", default="minimal,explorer,deathmatch")
    p.add_argument("--n-envs", default=None, help="comma-separated env counts (default: minimal 4096, "
                   "explorer 1024, deathmatch 256, the issue's goals)")
    p.add_argument("--backend", default="kernel", choices=["kernel", "reference"])
    p.add_argument("--steps", type=int, default=16, help="steps per timed call")
    p.add_argument("--repeats", type=int, default=3, help="timed calls; the best is kept")
    p.add_argument("--res", type=int, default=None, help="render resolution (env default if unset)")
    p.add_argument("--n-agents", type=int, default=None, help="Deathmatch agents per env (4)")
    p.add_argument("--geometries", choices=["toys", "floorplans"], default="floorplans",
                   help="plans of Explorer and Deathmatch (Minimal plays in its box)")
    p.add_argument("--n-plans", type=int, default=8, help="procedural plans per env object")
    p.add_argument("--profile", action="store_true", help="also time the parts of a step")
    p.add_argument("--quick", action="store_true", help="64 envs, 4 steps, 1 repeat: a smoke run")
    p.add_argument("--cpu-time", action="store_true", help="time by this process's CPU seconds (all "
                   "threads) instead of wall-clock: steadier on a shared machine; frames per CPU-second")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 4, 1

    print(f"# jax {jax.__version__} on {jax.default_backend()} ({platform.processor() or platform.machine()}), "
          f"{args.steps} steps/call, best of {args.repeats}, geometries={args.geometries} "
          f"({args.n_plans} plans), backend={args.backend}, "
          f"{'frames per CPU-second' if args.cpu_time else 'wall-clock frames/s'}")
    print(f"{'env':<11} {'n_envs':>7} {'agents':>6} {'res':>5} {'full frames/s':>14} "
          f"{'bare kernels':>13} {'ratio':>6} {'compile s':>9} {'state KB/env':>12} {'temp KB/env':>11}")
    key = jax.random.PRNGKey(0)
    for name in args.envs.split(","):
        env = make(name, args.backend, args.res, args.geometries, args.n_agents, args.n_plans)
        counts = ([64] if args.quick else [DEFAULT_N_ENVS[name]]) if args.n_envs is None else \
            [int(x) for x in args.n_envs.split(",")]
        for n in counts:
            fps, state = full_step(env, n, args.steps, args.repeats, key, args.cpu_time)
            bare = bare_kernels(env, state, args.steps, args.repeats, key, args.cpu_time)
            compile_s, state_kb, temp_kb = compile_and_memory(env, state, n)
            print(f"{name:<11} {n:>7} {env.n_agents:>6} {env.res:>5} {fps:>14,.0f} {bare:>13,.0f} "
                  f"{fps / bare:>6.2f} {compile_s:>9.1f} {state_kb:>12.1f} {temp_kb:>11.1f}", flush=True)
            if args.profile:
                for part, us in profile(env, state, args.repeats, key, args.cpu_time):
                    print(f"    {part:<44} {us:>8.2f} us/env")


if __name__ == "__main__":
    main()
