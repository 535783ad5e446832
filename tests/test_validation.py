"""Every public entry point rejects bad input with a ValueError or TypeError naming the argument.

One table: (entry point, bad input, argument the message must name). Each case must raise
before any kernel runs; none may crash the process or be silently clipped.
RELIABILITY.md reports the count.
"""
from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax import core, floorplans, geometry, scene, spaces, toys
from megastep_jax.arrdict import arrdict

nan, inf = float("nan"), float("inf")


# ---------------------------------------------------------------------------------------
# Good inputs, built once, that each case spoils in one way

@functools.lru_cache(None)
def box():
    return toys.box()


@functools.lru_cache(None)
def world():
    """(scenery, agents): 2 box envs, 1 agent each at (3, 3)."""
    s = scene.scenery([box(), box()], n_agents=1, key=jax.random.key(0))
    a = core.init_agents(2, 1).replace(positions=jnp.full((2, 1, 2), 3.0))
    return s, a


@functools.lru_cache(None)
def minimal():
    from megastep_jax.envs import Minimal

    env = Minimal(res=8)
    obs, state = env.reset(jax.random.PRNGKey(0))
    return env, state


@functools.lru_cache(None)
def vecenv():
    from megastep_jax.vecenv import VecEnv

    return VecEnv(minimal()[0], n_envs=2)


def good_geometry(**changes):
    g = box()
    kw = dict(walls=g.walls, lights=g.lights, masks=g.masks, res=g.res, id=0)
    kw.update(changes)
    return geometry.geometry(**kw)


def render(**kw):
    s, a = world()
    args = dict(scenery=s, agents=a)
    args.update(kw)
    return core.render(**args)


def physics(**kw):
    s, a = world()
    args = dict(scenery=s, agents=a)
    args.update(kw)
    return core.physics(**args)


def agents_with(**fields):
    return world()[1].replace(**fields)


def scenery_with(**fields):
    return world()[0].replace(**fields)


def env_reset(params=None, key=None):
    env, _ = minimal()
    return env.reset(jax.random.PRNGKey(0) if key is None else key, params)


def env_params(**changes):
    return minimal()[0].default_params.replace(**changes)


def env_step(action=None, key=None, params=None):
    env, state = minimal()
    action = arrdict(movement=jnp.zeros((1,), jnp.int32)) if action is None else action
    return env.step(jax.random.PRNGKey(1) if key is None else key, state, action, params)


def vec_step(actions):
    v = vecenv()
    v.reset()
    return v.step(actions)


def minimal_env(**kw):
    from megastep_jax.envs import Minimal

    return Minimal(**{"res": 8, **kw})


def explorer_env(**kw):
    from megastep_jax.envs import Explorer

    return Explorer(**{"geometries": [box()], "res": 8, "subsample": 2, **kw})


def deathmatch_env(**kw):
    from megastep_jax.envs import Deathmatch

    return Deathmatch(**{"geometries": [box()], "res": 8, "subsample": 2, **kw})


# ---------------------------------------------------------------------------------------
# The table: id -> (call, name the message must contain)

CASES = {
    # geometry constructors
    "geometry.walls wrong shape": (lambda: good_geometry(walls=np.ones((3, 2))), "walls"),
    "geometry.walls wrong trailing shape": (lambda: good_geometry(walls=np.ones((3, 2, 3))), "walls"),
    "geometry.walls string dtype": (lambda: good_geometry(walls=np.full((1, 2, 2), "a")), "walls"),
    "geometry.walls NaN": (lambda: good_geometry(walls=np.full((1, 2, 2), nan)), "walls"),
    "geometry.walls inf": (lambda: good_geometry(walls=np.full((1, 2, 2), inf)), "walls"),
    "geometry.walls zero coordinate": (lambda: good_geometry(walls=np.zeros((1, 2, 2))), "walls"),
    "geometry.walls negative": (lambda: good_geometry(walls=-np.ones((1, 2, 2))), "walls"),
    "geometry.lights wrong shape": (lambda: good_geometry(lights=np.ones((2, 3))), "lights"),
    "geometry.lights NaN": (lambda: good_geometry(lights=np.full((1, 2), nan)), "lights"),
    "geometry.lights negative": (lambda: good_geometry(lights=-np.ones((1, 2))), "lights"),
    "geometry.masks 1D": (lambda: good_geometry(masks=np.zeros(5, np.int32)), "masks"),
    "geometry.masks float": (lambda: good_geometry(masks=np.zeros((5, 5))), "masks"),
    "geometry.masks empty": (lambda: good_geometry(masks=np.zeros((0, 5), np.int32)), "masks"),
    "geometry.res zero": (lambda: good_geometry(res=0.0), "res"),
    "geometry.res negative": (lambda: good_geometry(res=-0.2), "res"),
    "geometry.res NaN": (lambda: good_geometry(res=nan), "res"),
    "geometry.res string": (lambda: good_geometry(res="0.2"), "res"),
    "geometry.id string": (lambda: good_geometry(id="zero"), "id"),
    "geometry.validate not a dict": (lambda: geometry.validate([1, 2]), "geometry"),
    "geometry.validate missing walls": (lambda: geometry.validate({"lights": box().lights}), "geometry"),
    "toys.box zero width": (lambda: toys.box(width=0.0), "width"),
    "toys.box negative height": (lambda: toys.box(height=-1.0), "height"),
    "toys.box NaN width": (lambda: toys.box(width=nan), "width"),
    "toys.room_with_column side zero": (lambda: toys.room_with_column(side=0.0), "side"),
    "toys.column pillar too wide": (lambda: toys.column(column_width=6.0), "column_width"),
    "toys.maze key string": (lambda: toys.maze("seven"), "key"),
    "toys.maze size zero": (lambda: toys.maze(0, size=0), "size"),
    "toys.maze size huge": (lambda: toys.maze(0, size=10**6), "size"),
    "toys.maze cell too small": (lambda: toys.maze(0, cell=0.1), "cell"),
    "floorplans.generate negative seed": (lambda: floorplans.generate(-1), "key_or_seed"),
    "floorplans.generate extent reversed": (lambda: floorplans.generate(0, extent=(20.0, 8.0)), "extent"),
    "floorplans.generate rooms zero": (lambda: floorplans.generate(0, rooms=(0, 0)), "rooms"),
    "floorplans.generate res zero": (lambda: floorplans.generate(0, res=0.0), "res"),
    "floorplans.sample bad split": (lambda: floorplans.sample(1, split="nope"), "split"),

    # scene.scenery
    "scenery.geometries empty": (lambda: scene.scenery([], 1, jax.random.key(0)), "geometries"),
    "scenery.geometries a dict": (lambda: scene.scenery(box(), 1, jax.random.key(0)), "geometries"),
    "scenery.geometries bad member": (lambda: scene.scenery([box(), {"walls": 1}], 1, jax.random.key(0)),
                                      "geometries"),
    "scenery.geometries NaN walls": (lambda: scene.scenery([dict(box(), walls=np.full((1, 2, 2), nan))], 1,
                                                           jax.random.key(0)), "walls"),
    "scenery.n_agents zero": (lambda: scene.scenery([box()], 0, jax.random.key(0)), "n_agents"),
    "scenery.n_agents negative": (lambda: scene.scenery([box()], -2, jax.random.key(0)), "n_agents"),
    "scenery.n_agents float": (lambda: scene.scenery([box()], 1.5, jax.random.key(0)), "n_agents"),
    "scenery.n_agents bool": (lambda: scene.scenery([box()], True, jax.random.key(0)), "n_agents"),
    "scenery.key missing": (lambda: scene.scenery([box()], 1), "key"),
    "scenery.key int": (lambda: scene.scenery([box()], 1, 0), "key"),
    "scenery.key float array": (lambda: scene.scenery([box()], 1, jnp.zeros(2)), "key"),
    "scenery.backend": (lambda: scene.scenery([box()], 1, jax.random.key(0), backend="gpu!"), "backend"),

    # core.render
    "render.res zero": (lambda: render(res=0), "res"),
    "render.res negative": (lambda: render(res=-8), "res"),
    "render.res huge": (lambda: render(res=10**6), "res"),
    "render.res float": (lambda: render(res=16.0), "res"),
    "render.res bool": (lambda: render(res=True), "res"),
    "render.fov 180": (lambda: render(fov=180.0), "fov"),
    "render.fov above 180": (lambda: render(fov=270.0), "fov"),
    "render.fov zero": (lambda: render(fov=0.0), "fov"),
    "render.fov negative": (lambda: render(fov=-30.0), "fov"),
    "render.fov NaN": (lambda: render(fov=nan), "fov"),
    "render.fov inf": (lambda: render(fov=inf), "fov"),
    "render.fov array": (lambda: render(fov=jnp.ones(3)), "fov"),
    "render.fov string": (lambda: render(fov="wide"), "fov"),
    "render.radius negative": (lambda: render(radius=-0.1), "radius"),
    "render.radius NaN": (lambda: render(radius=nan), "radius"),
    "render.backend": (lambda: render(backend="cuda-please"), "backend"),
    "render.scenery not a Scenery": (lambda: render(scenery="box"), "scenery"),
    "render.scenery int lines": (lambda: render(scenery=scenery_with(lines=world()[0].lines.astype(jnp.int32))),
                                 "scenery.lines"),
    "render.scenery lines wrong rank": (lambda: render(scenery=scenery_with(lines=world()[0].lines[0])),
                                        "scenery.lines"),
    "render.scenery n_lines too large": (lambda: render(scenery=scenery_with(n_lines=world()[0].n_lines + 1000)),
                                         "scenery.n_lines"),
    "render.scenery n_lights negative": (lambda: render(scenery=scenery_with(n_lights=world()[0].n_lights - 5)),
                                         "scenery.n_lights"),
    "render.scenery textures wrong shape": (lambda: render(scenery=scenery_with(textures=world()[0].textures[..., :2])),
                                            "scenery.textures"),
    "render.scenery baked mismatched": (lambda: render(scenery=scenery_with(baked=world()[0].baked[:, :3])),
                                        "scenery.baked"),
    "render.scenery model wrong shape": (lambda: render(scenery=scenery_with(model=world()[0].model[:4])),
                                         "scenery.model"),
    "render.agents not Agents": (lambda: render(agents={"positions": 1}), "agents"),
    "render.agents positions zero": (lambda: render(agents=agents_with(positions=jnp.zeros((2, 1, 2)))),
                                     "agents.positions"),
    "render.agents positions negative": (lambda: render(agents=agents_with(positions=-jnp.ones((2, 1, 2)))),
                                         "agents.positions"),
    "render.agents positions NaN": (lambda: render(agents=agents_with(positions=jnp.full((2, 1, 2), nan))),
                                    "agents.positions"),
    "render.agents positions inf": (lambda: render(agents=agents_with(positions=jnp.full((2, 1, 2), inf))),
                                    "agents.positions"),
    "render.agents positions wrong shape": (lambda: render(agents=agents_with(positions=jnp.ones((2, 1, 3)))),
                                            "agents.positions"),
    "render.agents positions int": (lambda: render(agents=agents_with(positions=jnp.ones((2, 1, 2), jnp.int32))),
                                    "agents.positions"),
    "render.agents angles NaN": (lambda: render(agents=agents_with(angles=jnp.full((2, 1), nan))), "agents.angles"),
    "render.agents angles wrong rank": (lambda: render(agents=agents_with(angles=jnp.zeros(2))), "agents.angles"),
    "render.agents mismatched n_envs": (lambda: render(agents=core.init_agents(3, 1).replace(
        positions=jnp.full((3, 1, 2), 3.0))), "envs"),
    "render.agents mismatched n_agents": (lambda: render(agents=core.init_agents(2, 2).replace(
        positions=jnp.full((2, 2, 2), 3.0))), "agents"),

    # core.physics
    "physics.fps zero": (lambda: physics(fps=0.0), "fps"),
    "physics.fps negative": (lambda: physics(fps=-10.0), "fps"),
    "physics.fps NaN": (lambda: physics(fps=nan), "fps"),
    "physics.fps inf": (lambda: physics(fps=inf), "fps"),
    "physics.fps bool": (lambda: physics(fps=True), "fps"),
    "physics.fps array": (lambda: physics(fps=jnp.ones(2)), "fps"),
    "physics.radius negative": (lambda: physics(radius=-1.0), "radius"),
    "physics.restitution above 1": (lambda: physics(restitution=1.5), "restitution"),
    "physics.restitution negative": (lambda: physics(restitution=-0.1), "restitution"),
    "physics.collision unknown": (lambda: physics(collision="teleport"), "collision"),
    "physics.backend": (lambda: physics(backend="abacus"), "backend"),
    "physics.agents velocity NaN": (lambda: physics(agents=agents_with(velocity=jnp.full((2, 1, 2), nan))),
                                    "agents.velocity"),
    "physics.agents velocity inf": (lambda: physics(agents=agents_with(velocity=jnp.full((2, 1, 2), inf))),
                                    "agents.velocity"),
    "physics.agents angvelocity NaN": (lambda: physics(agents=agents_with(angvelocity=jnp.full((2, 1), nan))),
                                       "agents.angvelocity"),
    "physics.agents velocity wrong shape": (lambda: physics(agents=agents_with(velocity=jnp.ones((2, 2)))),
                                            "agents.velocity"),
    "physics.agents positions zero": (lambda: physics(agents=agents_with(positions=jnp.zeros((2, 1, 2)))),
                                      "agents.positions"),
    "physics.scenery not a Scenery": (lambda: physics(scenery=None), "scenery"),

    # core.bake and init_agents
    "bake.scenery not a Scenery": (lambda: core.bake("scenery"), "scenery"),
    "bake.scenery texel_widths float": (lambda: core.bake(scenery_with(
        texel_widths=world()[0].texel_widths.astype(jnp.float32))), "scenery.texel_widths"),
    "bake.backend": (lambda: core.bake(world()[0], backend="x"), "backend"),
    "init_agents.n_envs zero": (lambda: core.init_agents(0, 1), "n_envs"),
    "init_agents.n_agents zero": (lambda: core.init_agents(1, 0), "n_agents"),
    "init_agents.n_envs float": (lambda: core.init_agents(2.0, 1), "n_envs"),

    # spaces
    "MultiDiscrete n_agents zero": (lambda: spaces.MultiDiscrete(0, 7), "n_agents"),
    "MultiDiscrete n_actions zero": (lambda: spaces.MultiDiscrete(1, 0), "n_actions"),
    "MultiDiscrete n_actions float": (lambda: spaces.MultiDiscrete(1, 7.0), "n_actions"),
    "MultiImage channels zero": (lambda: spaces.MultiImage(1, 0, 1, 8), "channels"),
    "MultiImage width negative": (lambda: spaces.MultiImage(1, 3, 1, -8), "width"),
    "MultiVector dim zero": (lambda: spaces.MultiVector(1, 0), "dim"),
    "MultiVector low >= high": (lambda: spaces.MultiVector(1, 3, low=1.0, high=1.0), "low"),

    # env constructors
    "Minimal n_agents zero": (lambda: minimal_env(n_agents=0), "n_agents"),
    "Minimal res zero": (lambda: minimal_env(res=0), "res"),
    "Minimal res float": (lambda: minimal_env(res=8.0), "res"),
    "Minimal backend": (lambda: minimal_env(backend="x"), "backend"),
    "Minimal seed string": (lambda: minimal_env(seed="zero"), "seed"),
    "Minimal geometries bad": (lambda: minimal_env(geometries=[{"walls": 1}]), "geometries"),
    "Explorer subsample not a divisor": (lambda: explorer_env(res=8, subsample=3), "subsample"),
    "Explorer subsample zero": (lambda: explorer_env(subsample=0), "subsample"),
    "Deathmatch n_agents zero": (lambda: deathmatch_env(n_agents=0), "n_agents"),

    # env reset/step: params, keys, actions
    "env.reset params fov 180": (lambda: env_reset(params=env_params(fov=180.0)), "fov"),
    "env.reset params fov zero": (lambda: env_reset(params=env_params(fov=0.0)), "fov"),
    "env.step params fps negative": (lambda: env_step(params=env_params(fps=-1.0)), "fps"),
    "env.reset key int": (lambda: env_reset(key=0), "key"),
    "env.reset key float array": (lambda: env_reset(key=jnp.zeros(2)), "key"),
    "env.step key int": (lambda: env_step(key=3), "key"),
    "env.step action float": (lambda: env_step(action=arrdict(movement=jnp.array([1.0]))), "action"),
    "env.step action wrong n_agents": (lambda: env_step(action=arrdict(movement=jnp.zeros(3, jnp.int32))),
                                       "action"),
    "spaces.sample key int": (lambda: spaces.sample(spaces.MultiDiscrete(1, 7), 0), "key"),

    # VecEnv
    "VecEnv n_envs zero": (lambda: __import__("megastep_jax.vecenv").vecenv.VecEnv(minimal()[0], 0), "n_envs"),
    "VecEnv seed string": (lambda: __import__("megastep_jax.vecenv").vecenv.VecEnv(minimal()[0], 1, seed="s"),
                           "seed"),
    "VecEnv actions out of range": (lambda: vec_step(np.array([7, 0])), "actions"),
    "VecEnv actions negative": (lambda: vec_step(np.array([-1, 0])), "actions"),
    "VecEnv actions wrong batch": (lambda: vec_step(np.array([0, 0, 0])), "actions"),
}

CASES.update({
    "VecEnv actions non-integral": (lambda: vec_step(np.array([0.5, 1.0])), "actions"),
    "env.step params fps zero": (lambda: env_step(params=env_params(fps=0.0)), "fps"),
    "env.reset params max_steps zero": (lambda: env_reset(params=env_params(max_steps=0)), "max_steps"),
    "env.step action out of range": (lambda: env_step(action=arrdict(movement=jnp.array([9], jnp.int32))),
                                     "action"),
    "env.step action negative": (lambda: env_step(action=arrdict(movement=jnp.array([-1], jnp.int32))), "action"),
})


def _check(call, name):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    message = str(info.value)
    assert re.search(re.escape(name), message, re.IGNORECASE), f"message does not name {name!r}: {message}"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_rejected_naming_the_argument(case):
    _check(*CASES[case])



def test_validation_happens_before_the_kernel_under_jit():
    # under jit only shapes and dtypes are known; they are still checked at trace time
    s, a = world()
    with pytest.raises(ValueError, match="res"):
        jax.jit(lambda a: core.render(s, a, res=0))(a)
    with pytest.raises(ValueError, match="agents.positions"):
        jax.jit(lambda p: core.physics(s, a.replace(positions=p)))(jnp.ones((2, 1, 3)))
    with pytest.raises(ValueError, match="collision"):
        jax.jit(lambda a: core.physics(s, a, collision="x"))(a)


def test_good_inputs_still_pass():
    # the spoiled inputs above come from these: each is valid as it stands
    good_geometry()
    render(res=4)
    physics()
    core.bake(world()[0])
    env_step()
