"""gymnasium adapters: a ``gymnasium.vector.VectorEnv`` and a single-env ``gymnasium.Env``.

:class:`GymnasiumVectorEnv` steps ``n_envs`` copies of a functional env in one jitted,
vmapped call. Like :class:`megastep_jax.vecenv.VecEnv` it flattens envs and agents into
``num_envs = n_envs * A`` slots (slot ``i`` is agent ``i % A`` of env ``i // A``), each
with the env's spaces minus the agent axis. It auto-resets in the same step
(``metadata["autoreset_mode"] = AutoresetMode.SAME_STEP``): where a slot's episode ends,
the returned observation starts the next episode and ``infos["final_obs"][i]`` holds the
last one (``infos["_final_obs"]`` marks those slots), as gymnasium's own vector envs do.

:class:`GymnasiumEnv` is one env as a ``gymnasium.Env``, without auto-reset (it runs the
env's raw ``step_env``). With one agent its spaces are that agent's: ``Discrete(7)``
actions for our envs' one movement head (an env with several action heads takes
``MultiDiscrete([n_1, n_2, ...])``), observations without the agent axis. With ``A > 1``
(Deathmatch's default of 4) the observations keep the leading agent axis (``rgb`` is
``Box(0, 1, (A, 3, 1, W))``), the action is ``MultiDiscrete([n] * A)`` of shape ``(A,)``
(``(A, heads)`` for several heads), and the reward is the sum over agents (each agent's
is in ``info["rewards"]``).
"""
from __future__ import annotations

from typing import Any, Optional

import gymnasium
import jax
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from . import validation
from .arrdict import arrdict
from .plotting import plot_state
from .recording import to_array
from .vecenv import Slots, gym_space, strip_image

__all__ = ["GymnasiumVectorEnv", "GymnasiumEnv"]


def _seed_from(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


class GymnasiumVectorEnv(gymnasium.vector.VectorEnv):
    """``n_envs`` copies of a megastep_jax env as a gymnasium vector env (see module docstring).

    Args:
        env: a functional env (:class:`megastep_jax.envs.base.Environment`).
        n_envs: number of envs stepped together.
        params: env params shared by all; None for the defaults.
        render_mode: None or ``"rgb_array"`` (each slot's first-person strips).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": ["rgb_array"]}

    def __init__(self, env, n_envs: int, params=None, render_mode: Optional[str] = None):
        validation.one_of("render_mode", render_mode, (None, "rgb_array"))
        self.slots = Slots(env, n_envs, params, seed=0)
        self.env = env
        self.n_envs = n_envs
        self.n_agents = self.slots.n_agents
        self.num_envs = self.slots.num_envs
        self.render_mode = render_mode
        self.single_observation_space = self.slots.observation_space
        self.single_action_space = self.slots.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        """Resets every env; with ``seed``, the keys of this and later steps derive from it."""
        super().reset(seed=seed)
        if seed is not None:
            self.slots.seed(seed)
        elif self.slots.state is None:
            self.slots.seed(_seed_from(self.np_random))
        return self.slots.reset(), {}

    def step(self, actions):
        obs, rewards, terminated, truncated, final = self.slots.step(actions)
        infos: dict[str, Any] = {}
        done = terminated | truncated
        if done.any():
            final_obs = np.empty(self.num_envs, dtype=object)
            final_info = np.empty(self.num_envs, dtype=object)
            for i in np.flatnonzero(done):
                final_obs[i] = self.slots.slot_obs(final, i)
                final_info[i] = {}
            infos = {"final_obs": final_obs, "_final_obs": done.copy(),
                     "final_info": final_info, "_final_info": done.copy()}
        return obs, rewards, terminated, truncated, infos

    def render(self):
        if self.render_mode is None:
            return None
        return tuple(self.slots.images())


class GymnasiumEnv(gymnasium.Env):
    """One megastep_jax env as a ``gymnasium.Env`` (see module docstring).

    Args:
        env: a functional env.
        params: env params; None for the defaults.
        render_mode: None or ``"rgb_array"``: the plot of :func:`megastep_jax.plotting.plot_state`
            when the env has ``state``/``plot_state``, else the first-person strips.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, env, params=None, render_mode: Optional[str] = None):
        validation.one_of("render_mode", render_mode, (None, "rgb_array"))
        self.env = env
        self.params = env.default_params if params is None else params
        self.render_mode = render_mode
        obs_space = env.observation_space(self.params)
        act_space = env.action_space(self.params)
        self.n_agents = next(iter(obs_space.values())).n_agents if isinstance(obs_space, dict) else obs_space.n_agents
        per_agent = self.n_agents == 1
        self.observation_space = gym_space(obs_space, per_agent=per_agent)
        self.action_space = gym_space(act_space, per_agent=per_agent, action=True)
        self._act_space = act_space
        self._reset = jax.jit(env.reset)
        self._step = jax.jit(env.step_env)
        self._state = None
        self._obs = None

    def _to_numpy(self, obs):
        obs = jax.device_get(dict(obs) if isinstance(obs, dict) else obs)
        squeeze = (lambda x: np.array(x[0])) if self.n_agents == 1 else np.array
        return {k: squeeze(v) for k, v in obs.items()} if isinstance(obs, dict) else squeeze(obs)

    def _to_env_action(self, action):
        a = np.asarray(action)
        if not self.action_space.contains(a if a.ndim else a.astype(np.int64)):
            raise ValueError(f"action: expected a member of {self.action_space}, got {action!r}")
        if isinstance(self._act_space, dict):
            a = a.reshape(self.n_agents, len(self._act_space))
            return arrdict({k: jax.numpy.asarray(a[:, i], jax.numpy.int32) for i, k in enumerate(self._act_space)})
        return jax.numpy.asarray(a.reshape(self.n_agents), jax.numpy.int32)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        key = jax.random.PRNGKey(_seed_from(self.np_random))
        obs, self._state = self._reset(key, self.params)
        self._obs = self._to_numpy(obs)
        return self._obs, {}

    def step(self, action):
        if self._state is None:
            raise ValueError("step: call reset() before stepping")
        key = jax.random.PRNGKey(_seed_from(self.np_random))
        obs, self._state, reward, terminated, truncated, _ = self._step(
            key, self._state, self._to_env_action(action), self.params)
        reward = np.asarray(reward, np.float32)
        self._obs = self._to_numpy(obs)
        info = {"rewards": reward}
        return self._obs, float(reward.sum()), bool(terminated), bool(truncated), info

    def render(self):
        if self.render_mode is None or self._state is None:
            return None
        try:
            s = self.env.state(self._state, self.params)
        except (AttributeError, NotImplementedError):
            s = None  # no plan view: show the first-person strips
        if s is not None:
            return to_array(getattr(type(self.env), "plot_state", plot_state)(s))
        obs = self._obs if self.n_agents == 1 else jax.tree_util.tree_map(lambda x: x[0], self._obs)
        return strip_image(obs)
