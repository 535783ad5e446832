"""Spaces: shapes, sampling with keys, membership, dicts of spaces."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax import spaces
from megastep_jax.arrdict import arrdict, dotdict


def explorer_like():
    return dotdict(rgb=spaces.MultiImage(2, 3, 1, 8), d=spaces.MultiImage(2, 1, 1, 8),
                   imu=spaces.MultiVector(2, 3))


def test_shapes_and_dtypes():
    assert spaces.MultiDiscrete(4, 7).shape == (4,)
    assert spaces.MultiImage(4, 3, 1, 64).shape == (4, 3, 1, 64)
    assert spaces.MultiVector(4, 3).shape == (4, 3)
    assert spaces.MultiDiscrete(1, 7).dtype == jnp.int32


@pytest.mark.parametrize("make", [
    lambda: spaces.MultiDiscrete(0, 7), lambda: spaces.MultiDiscrete(2, 0),
    lambda: spaces.MultiDiscrete(2.0, 7), lambda: spaces.MultiImage(1, 3, 1, -4),
    lambda: spaces.MultiVector(True, 3)])
def test_bad_sizes_raise_naming_the_argument(make):
    with pytest.raises(ValueError, match="expected a positive int"):
        make()


def test_vector_bounds_validated():
    with pytest.raises(ValueError, match="low, high"):
        spaces.MultiVector(1, 2, low=1.0, high=0.0)


def test_samples_lie_in_their_spaces_and_depend_on_the_key():
    space = explorer_like()
    a = spaces.sample(space, jax.random.PRNGKey(0))
    b = spaces.sample(space, jax.random.PRNGKey(0))
    c = spaces.sample(space, jax.random.PRNGKey(1))
    assert type(a) is arrdict and set(a) == {"rgb", "d", "imu"}
    assert bool(spaces.contains(space, a))
    assert all(jnp.array_equal(a[k], b[k]) for k in a)
    assert not jnp.array_equal(a.rgb, c.rgb)
    act = spaces.MultiDiscrete(3, 7).sample(jax.random.PRNGKey(2))
    assert act.dtype == jnp.int32 and act.shape == (3,)


def test_batched_sampling_and_membership_with_leading_dims():
    space = dotdict(movement=spaces.MultiDiscrete(2, 7))
    x = spaces.sample(space, jax.random.PRNGKey(0), batch_shape=(5, 4))
    assert x.movement.shape == (5, 4, 2)
    assert bool(spaces.contains(space, x))
    ints = np.asarray(spaces.MultiDiscrete(1, 7).sample(jax.random.PRNGKey(3), (1000,)))
    assert ints.min() == 0 and ints.max() == 6


def test_membership_rejects_wrong_values_shapes_dtypes_and_keys():
    md = spaces.MultiDiscrete(2, 7)
    assert bool(md.contains(jnp.array([0, 6])))
    assert not bool(md.contains(jnp.array([0, 7])))
    assert not bool(md.contains(jnp.array([-1, 0])))
    assert not bool(md.contains(jnp.array([0.0, 1.0])))
    assert not bool(md.contains(jnp.array([0, 1, 2])))
    im = spaces.MultiImage(1, 1, 1, 4)
    assert bool(im.contains(jnp.zeros((1, 1, 1, 4))))
    assert not bool(im.contains(jnp.full((1, 1, 1, 4), 1.5)))
    assert not bool(im.contains(jnp.full((1, 1, 1, 4), jnp.nan)))
    vec = spaces.MultiVector(1, 3, low=-1.0, high=1.0)
    assert not bool(vec.contains(jnp.full((1, 3), 2.0)))
    assert bool(spaces.MultiVector(1, 3).contains(jnp.full((1, 3), 1e6)))
    space = explorer_like()
    x = spaces.sample(space, jax.random.PRNGKey(0))
    assert not bool(spaces.contains(space, arrdict(rgb=x.rgb, d=x.d)))


def test_membership_under_jit():
    space = explorer_like()
    x = spaces.zeros(space)
    assert bool(jax.jit(lambda x: spaces.contains(space, x))(x))


def test_bounded_vector_sampling_respects_bounds_outside_unit_interval():
    vec = spaces.MultiVector(1, 2, low=5.0)
    x = vec.sample(jax.random.PRNGKey(0), (100,))
    assert bool(vec.contains(x)) and float(x.min()) >= 5.0


def test_spaces_are_hashable_static_config():
    assert hash(spaces.MultiDiscrete(1, 7)) == hash(spaces.MultiDiscrete(1, 7))
    assert spaces.is_space_tree(explorer_like())
    assert not spaces.is_space_tree(dotdict(a=1))


def test_to_gymnasium():
    gym = pytest.importorskip("gymnasium")
    g = spaces.to_gymnasium(dotdict(movement=spaces.MultiDiscrete(2, 7),
                                    rgb=spaces.MultiImage(2, 3, 1, 4)))
    assert isinstance(g, gym.spaces.Dict)
    assert g["movement"].nvec.tolist() == [7, 7]
    assert g["rgb"].shape == (2, 3, 1, 4)
    with pytest.raises(ValueError, match="space"):
        spaces.to_gymnasium(3)


def test_box_space():
    box = spaces.Box((2, 3, 1, 4), -5.0, 5.0)
    x = box.sample(jax.random.PRNGKey(0), (7,))
    assert x.shape == (7, 2, 3, 1, 4) and bool(box.contains(x))
    assert not bool(box.contains(jnp.full((2, 3, 1, 4), 6.0)))
    assert not bool(box.contains(jnp.zeros((2, 3, 1, 5))))
    assert box.n_agents == 2
    with pytest.raises(ValueError, match="shape: expected a tuple"):
        spaces.Box((2, 0))


def test_multi_constant_is_a_one_choice_space_per_agent():
    s = spaces.MultiConstant(3)
    assert s.shape == (3,) and s.n_actions == 1 and s.dtype == jnp.int32
    x = s.sample(jax.random.PRNGKey(0), (5,))
    assert x.shape == (5, 3) and not x.any() and bool(s.contains(x))
    assert not bool(s.contains(jnp.ones((3,), jnp.int32)))
    assert not bool(s.contains(jnp.zeros((3,), jnp.float32)))
    assert spaces.zeros(dotdict(c=s), (2,))["c"].shape == (2, 3)
    with pytest.raises(ValueError, match="n_agents"):
        spaces.MultiConstant(0)


def test_multi_empty_has_members_with_no_values():
    s = spaces.MultiEmpty(2)
    assert s.shape == (2, 0) and spaces.MultiEmpty().shape == (1, 0)
    x = spaces.sample(dotdict(e=s), jax.random.PRNGKey(0), (4,))["e"]
    assert x.shape == (4, 2, 0) and bool(s.contains(x))
    assert not bool(s.contains(jnp.zeros((2, 1))))
    assert spaces.is_space_tree(dotdict(e=s, c=spaces.MultiConstant(2)))


def test_multi_discrete_shape_is_an_actions_and_logits_shape_is_megasteps():
    s = spaces.MultiDiscrete(4, 7)
    assert s.shape == (4,) == s.sample(jax.random.PRNGKey(0)).shape
    assert s.logits_shape == (4, 7)


def test_to_gymnasium_of_the_constant_and_empty_spaces():
    gym = pytest.importorskip("gymnasium")
    g = spaces.to_gymnasium(dotdict(c=spaces.MultiConstant(2), e=spaces.MultiEmpty(2)))
    assert g["c"] == gym.spaces.MultiDiscrete([1, 1])
    assert g["e"].shape == (2, 0)


def test_to_gymnax_is_one_agents_view():
    gxs = pytest.importorskip("gymnax.environments.spaces")
    g = spaces.to_gymnax(dotdict(movement=spaces.MultiDiscrete(2, 7), rgb=spaces.MultiImage(2, 3, 1, 4),
                                 imu=spaces.MultiVector(2, 3), c=spaces.MultiConstant(2), e=spaces.MultiEmpty(2)))
    assert isinstance(g, gxs.Dict)
    assert isinstance(g.spaces["movement"], gxs.Discrete) and g.spaces["movement"].n == 7
    assert isinstance(g.spaces["rgb"], gxs.Box) and g.spaces["rgb"].shape == (3, 1, 4)
    assert g.spaces["c"].n == 1 and g.spaces["e"].shape == (0,)
    imu = g.spaces["imu"].sample(jax.random.PRNGKey(0))
    assert imu.shape == (3,) and np.all(np.isfinite(imu)) and bool(g.spaces["imu"].contains(imu))
    assert spaces.to_gymnax(spaces.Box((2, 5), -2.0, 2.0)).shape == (5,)
    with pytest.raises(ValueError, match="space"):
        spaces.to_gymnax(3)
