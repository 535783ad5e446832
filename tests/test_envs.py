"""The demo envs: whole jitted episodes, determinism, params sweeps, auto-reset, Deathmatch hits.

Shapes are tiny (res 16-32, toys) and the compiled kernels are used; one test checks the
reference backend gives the same rollout.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax import core, modules, recording, spaces, toys
from megastep_jax.arrdict import arrdict
from megastep_jax.envs import (Batched, Deathmatch, Explorer, Minimal, MinimalParams, Stateful,
                               sweep)
from megastep_jax.wrappers import FinalObservation

GEOMS = [toys.box(), toys.room_with_column()]


@functools.lru_cache(maxsize=None)
def make(name, backend="kernel"):
    if name == "minimal":
        return Minimal(res=16, backend=backend)
    if name == "explorer":
        return Explorer(res=32, subsample=2, geometries=GEOMS, backend=backend)
    return Deathmatch(n_agents=3, res=32, subsample=2, geometries=GEOMS, backend=backend)


def short_params(name, env):
    p = env.default_params
    return p.replace(max_steps=12)  # truncates; Explorer's termination is tested on its own


def random_policy(env, params):
    return lambda key, obs: spaces.sample(env.action_space(params), key)


@functools.lru_cache(maxsize=None)
def rollout_fn(name, length, backend="kernel"):
    """The project's one rollout helper (recording.rollout_fn), jitted once per env and length."""
    env = make(name, backend)
    run = recording.rollout_fn(env, random_policy(env, env.default_params), length)

    def go(key, params):
        traj = run(key, params)
        first = jax.tree_util.tree_map(lambda x: x[0], traj.obs)
        traj["obs"] = jax.tree_util.tree_map(lambda x: x[1:], traj.obs)
        traj["state"] = jax.tree_util.tree_map(lambda x: x[1:], traj.state)
        return first, traj

    return go


NAMES = ["minimal", "explorer", "deathmatch"]


@functools.lru_cache(maxsize=None)
def jitted(env, method):
    return jax.jit(getattr(env, method))


@pytest.mark.parametrize("name", NAMES)
def test_episode_in_scan_is_finite_and_in_spaces(name):
    env = make(name)
    params = short_params(name, env)
    first, traj = rollout_fn(name, 30)(jax.random.PRNGKey(0), params)
    for leaf in jax.tree_util.tree_leaves(traj):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert bool(jnp.all(jnp.isfinite(leaf)))
    space = env.observation_space(params)
    assert bool(spaces.contains(space, first))
    assert bool(spaces.contains(space, traj.obs))
    assert "final_observation" not in traj.info  # only through wrappers.FinalObservation
    A = env.n_agents
    assert traj.info["agent_terminated"].shape == (30, A) and traj.info["agent_truncated"].shape == (30, A)
    A = env.n_agents
    assert traj.reward.shape == (30, A) and traj.reward.dtype == jnp.float32
    assert traj.terminated.dtype == jnp.bool_ and traj.terminated.shape == (30,)
    done = np.asarray(traj.terminated | traj.truncated)
    assert done.any(), "the short params should end at least one episode in 30 steps"


@pytest.mark.parametrize("name", NAMES)
def test_same_key_is_bit_identical_and_different_keys_differ(name):
    env = make(name)
    params = short_params(name, env)
    run = rollout_fn(name, 30)
    a = run(jax.random.PRNGKey(3), params)
    b = run(jax.random.PRNGKey(3), params)
    c = run(jax.random.PRNGKey(4), params)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    assert not np.array_equal(a[1].obs.rgb, c[1].obs.rgb)


SWEEPS = {
    "minimal": dict(fov=[60.0, 90.0, 120.0], speed=[5.0, 10.0, 20.0]),
    "explorer": dict(fov=[60.0, 90.0, 120.0], accel=[2.0, 5.0, 10.0]),
    "deathmatch": dict(fov=[50.0, 70.0, 90.0], accel=[2.0, 5.0, 10.0]),
}


@pytest.mark.parametrize("name", [
    "minimal", pytest.param("explorer", marks=pytest.mark.slow),
    pytest.param("deathmatch", marks=pytest.mark.slow)])
def test_vmap_over_params_gives_distinct_trajectories(name):
    env = make(name)
    params = sweep(short_params(name, env), **SWEEPS[name])
    run = rollout_fn(name, 30)
    keys = jnp.stack([jax.random.PRNGKey(7)] * 3)  # same key: only the params differ
    _, traj = jax.jit(jax.vmap(run))(keys, params)
    rgb = np.asarray(traj.obs.rgb)
    assert rgb.shape[:2] == (3, 30)
    assert not np.array_equal(rgb[0], rgb[1]) and not np.array_equal(rgb[1], rgb[2])
    one = run(jax.random.PRNGKey(7), jax.tree_util.tree_map(lambda x: x[1], params))[1]
    assert np.allclose(one.obs.rgb, rgb[1], atol=1e-6)


def test_sweep_validates():
    p = MinimalParams()
    with pytest.raises(ValueError, match="one length"):
        sweep(p, fov=[1.0, 2.0], speed=[1.0])
    with pytest.raises(ValueError, match="'nope' is not a params field"):
        sweep(p, nope=[1.0])


def test_auto_reset_gives_fresh_state_and_final_observation_on_request():
    env = make("minimal")
    final = FinalObservation(env)
    params = env.default_params.replace(max_steps=3)
    key = jax.random.PRNGKey(0)
    obs, state = jitted(env, "reset")(key, params)
    step, step_final = jitted(env, "step"), jitted(final, "step")
    action = arrdict(movement=jnp.array([3], jnp.int32))  # keeps moving: obs changes
    for t in range(3):
        prev = state
        out = step(jax.random.PRNGKey(t), state, action, params)
        obs, state, reward, terminated, truncated, info = out
    assert bool(truncated) and not bool(terminated) and "final_observation" not in info
    assert info["agent_truncated"].tolist() == [True] and info["agent_terminated"].tolist() == [False]
    assert int(state.length) == 0
    # the wrapper's step is the env's step plus the ended episode's last observation
    out_final = step_final(jax.random.PRNGKey(2), prev, action, params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(out[:5]),
                                                      jax.tree_util.tree_leaves(out_final[:5])))
    k_step, k_reset = jax.random.split(jax.random.PRNGKey(2))
    raw_obs, raw_state, *_ = jitted(env, "step_env")(k_step, prev, action, params)
    assert np.array_equal(out_final[5]["final_observation"].rgb, raw_obs.rgb)
    assert not np.array_equal(raw_obs.rgb, obs.rgb) and int(raw_state.length) == 3
    fresh_obs, fresh = jitted(env, "reset")(k_reset, params)
    assert np.array_equal(obs.rgb, fresh_obs.rgb)
    assert np.array_equal(state.agents.positions, fresh.agents.positions)
    # a step that does not end the episode passes the step's own obs through
    obs2, state2, *_, info2 = step_final(jax.random.PRNGKey(9), state, action, params)
    assert np.array_equal(obs2.rgb, info2["final_observation"].rgb) and int(state2.length) == 1


def test_explorer_reward_counts_new_texels_and_potential_ends_episode():
    env = make("explorer")
    params = env.default_params
    obs, state = jitted(env, "reset")(jax.random.PRNGKey(1), params)
    p0 = int(state.potential)
    n_seen = lambda s: int(core.unpack_seen(s.seen, env.scene.n_texels).sum())
    assert p0 > 0 and n_seen(state) == p0
    step = jitted(env, "step_env")
    total = 0.0
    turn = arrdict(movement=jnp.array([5], jnp.int32))
    for t in range(6):
        obs, state, reward, terminated, truncated, info = step(jax.random.PRNGKey(t), state, turn, params)
        total += float(reward[0])
    assert int(state.potential) > p0  # turning reveals new walls
    assert n_seen(state) == int(state.potential)  # the incremental count is the full sum
    assert np.isclose(total * env.width, int(state.potential) - p0)
    # noop after a reset: the view and potential stay, so the episode ends exactly when
    # length reaches potential + patience
    obs, state = jitted(env, "reset")(jax.random.PRNGKey(1), params)
    params = params.replace(patience=4 - int(state.potential))
    noop = arrdict(movement=jnp.array([0], jnp.int32))
    ends = []
    for t in range(6):
        obs, state, reward, terminated, truncated, info = step(jax.random.PRNGKey(t), state, noop, params)
        ends.append(bool(terminated))
    assert ends == [False, False, False, True, True, True]


def scripted_duel(env, angle1):
    params = env.default_params
    obs, state = jitted(env, "reset")(jax.random.PRNGKey(0), params)
    positions = jnp.array([[2.0, 3.5], [4.0, 3.5], [5.5, 5.5]])
    angles = jnp.array([0.0, angle1, 90.0])
    state = state.replace(geometry=jnp.int32(0), health=jnp.ones(3), agents=state.agents.replace(
        positions=positions, angles=angles, velocity=jnp.zeros_like(positions),
        angvelocity=jnp.zeros_like(angles)))
    noop = arrdict(movement=jnp.zeros((3,), jnp.int32))
    return jitted(env, "step_env")(jax.random.PRNGKey(1), state, noop, params)


def test_deathmatch_scripted_hit():
    env = make("deathmatch")
    obs, state, reward, terminated, truncated, info = scripted_duel(env, 180.0)  # face to face
    assert reward.tolist() == [1.0, 1.0, 0.0]
    assert state.hits.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    assert np.allclose(state.health, [1 - 0.05 - 0.001, 1 - 0.05 - 0.001, 1 - 0.001])
    assert np.allclose(obs.health[:, 0], state.health)
    obs, state, reward, *_ = scripted_duel(env, 90.0)  # agent 1 looks away: one-way hit
    assert reward.tolist() == [1.0, 0.0, 0.0]
    assert np.allclose(state.health, [0.999, 0.949, 0.999])
    assert np.allclose(state.inflicted, [0.05, 0.0, 0.0])


def test_deathmatch_respawns_dead_agents():
    env = make("deathmatch")
    params = env.default_params
    obs, state = jitted(env, "reset")(jax.random.PRNGKey(0), params)
    state = state.replace(health=jnp.array([-0.1, 0.5, 1.0]))
    noop = arrdict(movement=jnp.zeros((3,), jnp.int32))
    obs, new, reward, terminated, truncated, info = jitted(env, "step_env")(jax.random.PRNGKey(1), state, noop, params)
    assert info["respawned"].tolist() == [True, False, False]
    assert info["agent_terminated"].tolist() == [True, False, False]  # its stream alone ends
    assert info["agent_truncated"].tolist() == [False, False, False]
    assert not bool(terminated) and not bool(truncated)
    assert float(new.health[0]) > 0.9 and float(new.health[1]) <= 0.5
    assert not np.allclose(new.agents.positions[0], state.agents.positions[0])
    assert float(reward[0]) == 0.0  # the respawned agent's last step scores nothing


def test_batched_form_matches_one_env_steps():
    env = make("minimal")
    params = env.default_params.replace(max_steps=3)
    batched = Batched(env, 3)
    obs, state = jax.jit(batched.reset)(jax.random.PRNGKey(0), params)
    assert obs.rgb.shape == (3, 1, 3, 1, 16) and state.length.shape == (3,)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    one_obs, one_state = jitted(env, "reset")(keys[1], params)
    assert np.array_equal(obs.rgb[1], one_obs.rgb)
    action = arrdict(movement=jnp.full((3, 1), 3, jnp.int32))
    out = jax.jit(batched.step)(jax.random.PRNGKey(1), state, action, params)
    one = jitted(env, "step")(jax.random.split(jax.random.PRNGKey(1), 3)[1], one_state, action[1], params)
    member = jax.tree_util.tree_map(lambda x: x[1], out)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(member), jax.tree_util.tree_leaves(one)))
    assert out[2].shape == (3, 1) and out[3].shape == (3,)
    with pytest.raises(ValueError, match="n_envs"):
        Batched(env, 0)
    with pytest.raises(ValueError, match="reset_ratio"):
        Batched(env, 2, reset_ratio=0)


def test_stateful_megastep_loop_with_optimistic_resets():
    env = make("minimal")
    params = env.default_params.replace(max_steps=2)
    loop = Stateful(env, n_envs=4, params=params, seed=0, reset_ratio=2)
    assert loop.batched.n_resets == 2
    world = loop.reset()
    assert world.obs.rgb.shape == (4, 1, 3, 1, 16) and bool(world.reset.all())
    key = jax.random.PRNGKey(0)
    for t in range(2):
        key, k = jax.random.split(key)
        decision = arrdict(actions=spaces.sample(loop.action_space, k, (4,)))
        world = loop.step(decision)
    assert world.reward.shape == (4, 1) and bool(world.reset.all()) and bool(world.truncated.all())
    assert loop.env_state.length.tolist() == [0, 0, 0, 0] and world.reset.shape == (4, 1)
    assert bool(spaces.contains(loop.observation_space, world.obs))
    # 4 envs ended at once with 2 fresh episodes: envs 0, 2 and 1, 3 share one each
    rgb = np.asarray(world.obs.rgb)
    assert np.array_equal(rgb[0], rgb[2]) and np.array_equal(rgb[1], rgb[3])
    assert loop.state(1).agents.positions.shape == (1, 2)


@pytest.mark.parametrize("name", NAMES)
def test_state_extraction_and_plot(name):
    import matplotlib
    matplotlib.use("Agg")
    env = make(name)
    obs, state = jitted(env, "reset")(jax.random.PRNGKey(0), env.default_params)
    s = env.state(state)
    assert isinstance(s.agents.positions, np.ndarray) and s.agents.positions.shape == (env.n_agents, 2)
    # the state renders its own first-person strips: the plot's strips are not empty
    assert np.array_equal(s.obs.rgb, np.asarray(obs.rgb)) and float(np.abs(s.obs.rgb).max()) > 0
    fig = env.plot_state(env.state(state, env.default_params))
    assert fig is not None
    assert len(fig.axes) >= 2  # plan and strips
    assert any(len(ax.images) > 0 for ax in fig.axes)


@pytest.mark.slow
def test_reference_backend_matches_kernels():
    ref, ker = make("minimal", "reference"), make("minimal", "kernel")
    params = ref.default_params
    key = jax.random.PRNGKey(5)
    act = arrdict(movement=jnp.array([3], jnp.int32))
    outs = []
    for env in (ref, ker):
        obs, state = env.reset(key, params)
        obs, state, *_ = jax.jit(env.step)(key, state, act, params)
        outs.append((obs, state))
    assert np.allclose(outs[0][0].rgb, outs[1][0].rgb, atol=1e-5)
    assert np.allclose(outs[0][1].agents.positions, outs[1][1].agents.positions, atol=1e-5)


def test_constructor_validation():
    with pytest.raises(ValueError, match="subsample: expected a divisor of res=30"):
        Explorer(res=30, subsample=4, geometries=GEOMS)
    with pytest.raises(ValueError, match="geometries: expected a non-empty list"):
        Explorer(geometries=[])
    with pytest.raises(ValueError, match="backend"):
        Minimal(backend="cuda-please")
    with pytest.raises(ValueError, match="n_agents"):
        Deathmatch(n_agents=0, geometries=GEOMS)


def test_tutorial_code_runs():
    """docs/tutorial.md builds an env in under 60 lines; its code blocks must run."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parent.parent / "docs" / "tutorial.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len([line for line in blocks[0].splitlines() if line.strip()]) < 60
    scope = {}
    for block in blocks:
        exec(compile(block.replace("n_envs=256", "n_envs=4"), "tutorial.md", "exec"), scope)
    assert scope["rewards"].shape == (100, 1) and bool(jnp.all(jnp.isfinite(scope["rewards"])))
    assert scope["obs"].rgb.shape == (3, 1, 3, 1, 64)  # the sweep's reset, last block
    env, state = scope["env"], scope["state"]
    assert bool(spaces.contains(env.observation_space(), scope["obs"][0]))
    assert env.state(state).agents.positions.shape == (1, 2)


def test_bad_actions_raise_naming_the_argument():
    env = make("minimal")
    params = env.default_params
    obs, state = jitted(env, "reset")(jax.random.PRNGKey(0), params)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"action: expected a dict with keys \['movement'\]"):
        env.step_env(key, state, arrdict(move=jnp.zeros(1, jnp.int32)), params)
    with pytest.raises(ValueError, match=r"action: expected shape \(\.\.\., 1\)"):
        env.step(key, state, arrdict(movement=jnp.zeros(2, jnp.int32)), params)
    with pytest.raises(ValueError, match=r"action: expected shape \(\.\.\., 1\)"):
        env.step(key, state, jnp.zeros(2, jnp.int32), params)  # bare ints: the same messages
    with pytest.raises(ValueError, match=r"action: expected values in \[0, 7\)"):
        env.step(key, state, jnp.array([7]), params)
    with pytest.raises(ValueError, match="action: expected integer actions"):
        env.step(key, state, jnp.array([1.0]), params)


def test_bare_integer_actions_are_the_arrdict_actions():
    env = make("deathmatch")
    params = env.default_params
    obs, state = jitted(env, "reset")(jax.random.PRNGKey(0), params)
    a = jnp.array([3, 5, 1], jnp.int32)
    step = jitted(env, "step")
    one, two = step(jax.random.PRNGKey(1), state, a, params), step(jax.random.PRNGKey(1), state, arrdict(movement=a), params)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(two)))
    env1 = make("minimal")
    obs, state = jitted(env1, "reset")(jax.random.PRNGKey(0), env1.default_params)
    scalar = jitted(env1, "step")(jax.random.PRNGKey(1), state, jnp.int32(3), env1.default_params)
    array = jitted(env1, "step")(jax.random.PRNGKey(1), state, arrdict(movement=jnp.array([3])), env1.default_params)
    assert np.array_equal(scalar[0].rgb, array[0].rgb)
    batched = Batched(env, 2)
    obs, states = jax.jit(batched.reset)(jax.random.PRNGKey(0), params)
    out = jax.jit(batched.step)(jax.random.PRNGKey(1), states, jnp.zeros((2, 3), jnp.int32), params)
    assert out[5]["agent_terminated"].shape == (2, 3)


def test_misuse_raises_naming_the_argument():
    env = make("minimal")
    params = env.default_params
    with pytest.raises(ValueError, match="state: expected the state returned by reset"):
        env.step(jax.random.PRNGKey(0), None, jnp.array([0]), params)
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    with pytest.raises(ValueError, match="params: expected a MinimalParams"):
        env.step(jax.random.PRNGKey(0), state, jnp.array([0]), {"fov": 90.0})
    with pytest.raises(ValueError, match="params: expected a MinimalParams"):
        env.reset(jax.random.PRNGKey(0), {"fov": 90.0})
    with pytest.raises(ValueError, match=r"params.fov: expected a value in \(0, 180\)"):
        env.reset(jax.random.PRNGKey(0), params.replace(fov=200.0))
    with pytest.raises(ValueError, match="state: expected the state"):
        Batched(env, 2).step(jax.random.PRNGKey(0), None, jnp.zeros((2, 1), jnp.int32), params)


def test_checked_step_reports_errors_under_jit():
    from megastep_jax.envs import checked_step

    env = make("minimal")
    params = env.default_params
    obs, state = jitted(env, "reset")(jax.random.PRNGKey(0), params)
    step = checked_step(env)
    err, out = step(jax.random.PRNGKey(1), state, jnp.array([3]), params)
    err.throw()  # a valid step: no error
    assert np.array_equal(out[0].rgb, jitted(env, "step")(jax.random.PRNGKey(1), state, jnp.array([3]), params)[0].rgb)
    err, _ = step(jax.random.PRNGKey(1), state, jnp.array([9]), params)
    with pytest.raises(Exception, match=r"action: expected values in \[0, 7\)"):
        err.throw()
    err, _ = step(jax.random.PRNGKey(1), state, jnp.array([3]), params.replace(fov=jnp.float32(200.0)))
    with pytest.raises(Exception, match=r"params.fov: expected a value in \(0, 180\)"):
        err.throw()


def test_envs_written_on_the_former_base_class_still_run():
    """The deprecated SceneryEnvironment: underscore hooks, agents with an env axis of 1."""
    from flax import struct

    from megastep_jax.envs import SceneryEnvironment

    @struct.dataclass
    class OldState:
        agents: object
        geometry: jax.Array

    class Old(SceneryEnvironment):
        def __init__(self):
            super().__init__([toys.box()], n_agents=1, res=16, subsample=1, backend="kernel", seed=0)
            self.rgb = modules.RGB(1, 16)
            self.movement = modules.SimpleMovement(1)

        default_params = MinimalParams()

        def action_space(self, params=None):
            return {"movement": self.movement.space}

        def reset_env(self, key, params):
            state = OldState(self._spawn(key, jnp.int32(0)), jnp.int32(0))
            return arrdict(rgb=self.rgb(self._render(state.geometry, state.agents, params.fov))), state

        def step_env(self, key, state, action, params):
            agents = self.movement.apply(state.agents, self._movement(action), params.fps)
            agents, _ = self._physics(state.geometry, agents, params.fps)
            state = state.replace(agents=agents)
            obs = arrdict(rgb=self.rgb(self._render(state.geometry, state.agents, params.fov)))
            return obs, state, jnp.zeros(1), jnp.bool_(False), jnp.bool_(True), {}

    env = Old()
    obs, state = env.reset(jax.random.PRNGKey(0))
    assert state.agents.positions.shape == (1, 1, 2) and obs.rgb.shape == (1, 3, 1, 16)
    obs, new, reward, terminated, truncated, info = env.step(jax.random.PRNGKey(1), state, jnp.int32(3))
    fresh_obs, fresh = env.reset_env(jax.random.split(jax.random.PRNGKey(1))[1], env.default_params)
    assert np.array_equal(obs.rgb, fresh_obs.rgb) and info["agent_truncated"].tolist() == [True]
    assert env._plot_state(new, None).agents.positions.shape == (1, 2)


def test_explorer_budget_observation_is_the_steps_left():
    env = Explorer(res=32, subsample=2, geometries=GEOMS, budget_obs=True)
    plain = make("explorer")
    params = env.default_params.replace(patience=20)
    assert "budget" not in plain.observation_space(params)
    assert env.observation_space(params)["budget"].shape == (1, 2)
    key = jax.random.PRNGKey(2)
    obs, state = env.reset(key, params)
    obs0, _ = plain.reset(key, params)
    np.testing.assert_array_equal(obs.rgb, obs0.rgb)  # the other observations are unchanged
    step = jax.jit(env.step)
    seen_low = False
    for i in range(60):
        left = float(state.potential + params.patience - state.length)
        want = [min(left / 20, 1.0), left / (left + 20)]
        np.testing.assert_allclose(obs["budget"], [want], rtol=1e-6)
        assert env.observation_space(params)["budget"].contains(obs["budget"])
        seen_low |= left < 20
        obs, state, *_ = step(jax.random.fold_in(key, i), state, jnp.zeros((1,), jnp.int32), params)
    assert seen_low  # standing still, the budget runs down to an episode's end
    with pytest.raises(ValueError, match="budget_obs"):
        Explorer(res=32, subsample=2, geometries=GEOMS, budget_obs=1)
