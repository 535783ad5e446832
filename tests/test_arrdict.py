"""dotdict / arrdict: the behaviours the concepts documentation lists, and pytree-ness."""
import copy
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from megastep_jax.arrdict import (arrdict, cat, dotdict, jaxify, mapping, numpyify, stack,
                                  starmapping)


def objs():
    return dotdict(a=dotdict(b=1, c=2), d=3)


def tensors():
    return arrdict(a=jnp.array([1]), b=arrdict(c=jnp.array([2])))


def test_attribute_access_reads_and_refuses_assignment():
    d = objs()
    assert d.a.b == 1 and d["a"]["c"] == 2 and d.d == 3
    with pytest.raises(AttributeError, match=r"d\['x'\] = value"):
        d.x = 4
    d["x"] = 4
    assert d.x == 4


def test_dict_methods_win_over_keys_and_forwarding():
    d = dotdict(a=1)
    assert list(d.keys()) == ["a"]
    assert d.copy() == d and type(d.copy()) is dotdict


def test_forwarded_attributes_and_calls():
    x = arrdict(a=jnp.zeros(3, jnp.float32), b=arrdict(c=jnp.ones((2, 2), jnp.float32)))
    y = x.astype(jnp.float16)
    assert y.a.dtype == jnp.float16 and y.b.c.dtype == jnp.float16
    assert x.shape == dotdict(a=(3,), b=dotdict(c=(2, 2)))
    with pytest.raises(AttributeError):
        x.no_such_attribute


def test_pipe_map_starmap_and_functional_forms():
    d = objs()
    assert d.pipe(list) == ["a", "d"]
    assert d.map(float) == dotdict(a=dotdict(b=1.0, c=2.0), d=3.0)
    assert d.map(int.__add__, 10) == dotdict(a=dotdict(b=11, c=12), d=13)
    assert d.starmap(int.__add__, d) == dotdict(a=dotdict(b=2, c=4), d=6)
    assert mapping(int.__add__)(d, 1).a.b == 2
    assert starmapping(int.__mul__)(d, d).d == 9
    assert d.map(float).starmap(float.__add__, d).pipe(list) == ["a", "d"]
    with pytest.raises(ValueError, match="differ in keys"):
        d.starmap(int.__add__, dotdict(a=1))


def test_pretty_printing_shows_shapes_and_dtypes():
    assert repr(objs()) == "dotdict:\n    a  dotdict:\n        b  1\n        c  2\n    d  3"
    s = repr(arrdict(x=jnp.zeros((2, 3), jnp.float32), y=np.zeros(4, np.int64)))
    assert s == "arrdict:\n    x  Array((2, 3), float32)\n    y  ndarray((4,), int64)"


def test_indexing_and_slicing_forward_to_leaves():
    t = tensors()
    assert t[0].a.shape == () and int(t[0].b.c) == 2
    assert t[0].item() == dotdict(a=1, b=dotdict(c=2))
    big = arrdict(x=jnp.arange(12).reshape(3, 4), y=arrdict(z=jnp.arange(3)))
    assert big[1:].x.shape == (2, 4) and big[1:].y.z.tolist() == [1, 2]
    assert big[jnp.array([2, 0])].y.z.tolist() == [2, 0]
    with pytest.raises(TypeError, match="immutable"):
        big[0] = big[1]


def test_binary_and_unary_operations():
    t = tensors()
    assert (t + t)[0].item() == dotdict(a=2, b=dotdict(c=4))
    assert (t * 3)[0].item().b.c == 6
    assert (1 - t)[0].item().a == 0
    assert (jnp.array([5]) - t)[0].item().b.c == 3
    assert (-t)[0].item().a == -1
    assert bool((t == t).b.c[0])
    assert (t / t).a.dtype == jnp.float32


def test_stack_and_cat():
    d = arrdict(a=1, b=np.array([1, 2]))
    s = stack([d, d, d])
    assert s.a.shape == (3,) and s.b.shape == (3, 2) and isinstance(s.b, np.ndarray)
    c = cat([d, d, d])
    assert c.a.shape == (3,) and c.b.shape == (6,)
    j = stack([arrdict(a=jnp.ones(2))] * 2, axis=1)
    assert j.a.shape == (2, 2) and isinstance(j.a, jax.Array)
    with pytest.raises(ValueError, match="non-empty"):
        stack([])


def test_numpyify_and_jaxify_round_trip():
    t = arrdict(a=jnp.arange(3), b=arrdict(c=jnp.ones(2)), n=3, l=[jnp.zeros(1)])
    n = numpyify(t)
    assert isinstance(n.a, np.ndarray) and isinstance(n.b.c, np.ndarray)
    assert isinstance(n.l[0], np.ndarray) and n.n == 3 and type(n) is arrdict
    j = jaxify(n)
    assert isinstance(j.a, jax.Array) and j.n == 3


def test_pytree_under_jit_vmap_and_scan_keeps_type_and_order():
    t = arrdict(z=jnp.arange(3.0), a=arrdict(y=jnp.ones((3, 2))))
    leaves, treedef = jax.tree_util.tree_flatten(t)
    assert [l.shape for l in leaves] == [(3,), (3, 2)]  # insertion order, not sorted
    out = jax.jit(lambda x: x * 2)(t)
    assert type(out) is arrdict and type(out.a) is arrdict
    assert jnp.array_equal(out.z, 2 * t.z)
    v = jax.vmap(lambda x: x.z + x.a.y.sum())(t)
    assert jnp.allclose(v, t.z + 2)

    def body(carry, x):
        return carry + x, arrdict(sq=x.z ** 2)

    carry, ys = jax.lax.scan(body, arrdict(z=0.0, a=arrdict(y=jnp.zeros(2))), t)
    assert type(carry) is arrdict and float(carry.z) == 3.0
    assert type(ys) is arrdict and ys.sq.tolist() == [0.0, 1.0, 4.0]
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(t)[0]]
    assert paths == ["['z']", "['a']['y']"]


def test_pickle_and_deepcopy():
    t = arrdict(a=np.arange(3), b=dotdict(c=1))
    for u in (pickle.loads(pickle.dumps(t)), copy.deepcopy(t)):
        assert type(u) is arrdict and type(u.b) is dotdict
        assert u.a.tolist() == [0, 1, 2] and u.b.c == 1
