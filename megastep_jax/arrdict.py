"""dotdicts and arrdicts: dictionaries with attribute access that are JAX pytrees.

A :class:`dotdict` is a ``dict`` whose keys can be read as attributes (``d.a``), whose
unknown attributes are forwarded to every value (``d.astype(jnp.float16)``), and which
prints as an indented tree. An :class:`arrdict` adds indexing, slicing and binary
operations forwarded to the leaves, and prints shapes and dtypes.

Both are registered with :mod:`jax.tree_util`, keeping key order, so they pass through
``jit``, ``vmap`` and ``lax.scan`` unchanged.
"""
from __future__ import annotations

import operator
from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np

__all__ = ["dotdict", "arrdict", "mapping", "starmapping", "stack", "cat", "numpyify", "jaxify",
           "treestr"]

# dict's own methods must not be shadowed by forwarding.
_DICT_ATTRS = frozenset(dir(dict))


class dotdict(dict):
    """A dict with attribute access, forwarded attributes and method chaining.

    Values are read with ``d.k`` or ``d[k]`` and assigned with ``d[k] = v`` only.
    Reading an attribute that is neither a key nor a dict method returns a dotdict of
    that attribute of every value; calling that dotdict calls every value.
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return type(self)({k: getattr(v, name) for k, v in self.items()})

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"assign with d[{name!r}] = value; attribute assignment is not supported"
        )

    def __call__(self, *args, **kwargs):
        return type(self)({k: v(*args, **kwargs) for k, v in self.items()})

    def __dir__(self) -> Iterable[str]:
        return list(self.keys()) + list(_DICT_ATTRS)

    def copy(self):
        return type(self)(self)

    def pipe(self, f: Callable, *args, **kwargs):
        """Returns ``f(self, *args, **kwargs)``, for method chaining."""
        return f(self, *args, **kwargs)

    def map(self, f: Callable, *args, **kwargs):
        """Applies ``f`` to every leaf of the tree, returning a tree of the results."""
        return mapping(f)(self, *args, **kwargs)

    def starmap(self, f: Callable, *others, **kwargs):
        """Applies ``f`` to matching leaves of ``self`` and ``others``."""
        return starmapping(f)(self, *others, **kwargs)

    def __repr__(self) -> str:
        return treestr(self)

    __str__ = __repr__


def _typename(v: Any) -> str:
    # jax's concrete array class is an implementation detail (ArrayImpl); say Array.
    if isinstance(v, jax.core.Tracer):
        return "Tracer"
    if isinstance(v, jax.Array):
        return "Array"
    return type(v).__name__


def _leafstr(v: Any) -> str:
    if hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, dotdict):
        if getattr(v, "shape", None) == () and not isinstance(v, jax.core.Tracer):
            try:
                return f"{_typename(v)}({v.item()!r}, {v.dtype})"
            except Exception:  # noqa: BLE001 - printing must never fail
                pass
        return f"{_typename(v)}({tuple(v.shape)}, {v.dtype})"
    return repr(v)


def treestr(t: Any, indent: int = 0) -> str:
    """An indented, one-key-per-line view of a tree of dotdicts."""
    if not isinstance(t, dotdict):
        return _leafstr(t)
    pad = "    " * (indent + 1)
    lines = [f"{type(t).__name__}:"]
    width = max((len(str(k)) for k in t), default=0)
    for k, v in t.items():
        lines.append(f"{pad}{str(k):<{width}}  {treestr(v, indent + 1)}")
    return "\n".join(lines)


def mapping(f: Callable) -> Callable:
    """Wraps ``f`` so that, called on a tree of dotdicts, it maps over the leaves."""

    def g(x, *args, **kwargs):
        if isinstance(x, dotdict):
            return type(x)({k: g(v, *args, **kwargs) for k, v in x.items()})
        return f(x, *args, **kwargs)

    return g


def starmapping(f: Callable) -> Callable:
    """Wraps ``f`` so that, called on several trees of one shape, it maps over leaves."""

    def g(x, *others, **kwargs):
        if isinstance(x, dotdict):
            for o in others:
                if not isinstance(o, dict) or set(o.keys()) != set(x.keys()):
                    raise ValueError(
                        f"starmap: trees differ in keys: {sorted(x)} vs "
                        f"{sorted(o) if isinstance(o, dict) else type(o).__name__}"
                    )
            return type(x)({k: g(v, *(o[k] for o in others), **kwargs) for k, v in x.items()})
        return f(x, *others, **kwargs)

    return g


def _binary(name: str, reflected: bool = False):
    op = getattr(operator, name)

    def method(self, other):
        if isinstance(other, dotdict):
            return starmapping(lambda a, b: op(b, a) if reflected else op(a, b))(self, other)
        return mapping(lambda a: op(other, a) if reflected else op(a, other))(self)

    method.__name__ = f"__{'r' if reflected else ''}{name.strip('_')}__"
    return method


def _unary(name: str):
    op = getattr(operator, name)

    def method(self):
        return mapping(op)(self)

    method.__name__ = f"__{name.strip('_')}__"
    return method


class arrdict(dotdict):
    """A dotdict of arrays: indexing, slicing and binary operations go to every leaf."""

    __slots__ = ()

    def __getitem__(self, key):
        if isinstance(key, str):
            return dict.__getitem__(self, key)
        return mapping(lambda v: v[key])(self)

    def __setitem__(self, key, value):
        if isinstance(key, str):
            return dict.__setitem__(self, key, value)
        raise TypeError(
            "arrdicts are immutable trees of arrays: use d.map(lambda x: x.at[i].set(...)) "
            "instead of assigning into an index"
        )


for _name in ["add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and_", "or_",
              "xor", "lt", "le", "gt", "ge", "eq", "ne", "matmul"]:
    _dunder = "__" + _name.rstrip("_") + "__"
    setattr(arrdict, _dunder, _binary(_name))
    if _name not in ("lt", "le", "gt", "ge", "eq", "ne"):
        setattr(arrdict, "__r" + _name.rstrip("_") + "__", _binary(_name, reflected=True))
for _name in ["neg", "pos", "abs", "invert"]:
    setattr(arrdict, "__" + _name + "__", _unary(_name))
# eq is forwarded, so hashing by identity keeps arrdicts usable as keys of nothing.
arrdict.__hash__ = None


def _flatten_with_keys(d: dotdict):
    keys = tuple(d.keys())
    return [(jax.tree_util.DictKey(k), d[k]) for k in keys], keys


def _flatten(d: dotdict):
    keys = tuple(d.keys())
    return [d[k] for k in keys], keys


for _cls in (dotdict, arrdict):
    jax.tree_util.register_pytree_with_keys(
        _cls,
        _flatten_with_keys,
        lambda keys, values, cls=_cls: cls(zip(keys, values)),
        _flatten,
    )


def _tree_op(combine: Callable, xs: Sequence, **kwargs):
    if len(xs) == 0:
        raise ValueError("xs: expected a non-empty sequence of arrays or arrdicts")
    first = xs[0]
    if isinstance(first, dotdict):
        return type(first)({k: _tree_op(combine, [x[k] for x in xs], **kwargs) for k in first})
    if isinstance(first, (int, float, bool, np.generic)):
        xs = [np.asarray(x) for x in xs]
    if all(isinstance(x, np.ndarray) for x in xs):
        return combine(np, xs, **kwargs)
    import jax.numpy as jnp

    return combine(jnp, xs, **kwargs)


def stack(xs: Sequence, axis: int = 0, **kwargs):
    """Stacks a sequence of arrays or of arrdicts of one shape along a new axis.

    >>> stack([arrdict(a=1), arrdict(a=2)]).a
    array([1, 2])
    """
    return _tree_op(lambda lib, v, **kw: lib.stack(v, axis=axis, **kw), xs, **kwargs)


def cat(xs: Sequence, axis: int = 0, **kwargs):
    """Concatenates a sequence of arrays or of arrdicts of one shape along an axis.

    Scalars are treated as 1-element arrays, so concatenating floats gives a 1D array.

    >>> cat([arrdict(a=1, b=np.array([1, 2]))] * 3).b.shape
    (6,)
    """
    return _tree_op(
        lambda lib, v, **kw: lib.concatenate([lib.atleast_1d(x) for x in v], axis=axis, **kw),
        xs, **kwargs)


def numpyify(x):
    """Converts every array leaf of a tree (dotdicts, lists, tuples) to numpy."""
    if isinstance(x, dotdict):
        return type(x)({k: numpyify(v) for k, v in x.items()})
    if isinstance(x, (list, tuple)):
        return type(x)(numpyify(v) for v in x)
    if isinstance(x, jax.Array):
        return np.asarray(x)
    if hasattr(x, "__dataclass_fields__") and hasattr(x, "replace"):
        return jax.tree_util.tree_map(np.asarray, x)
    return x


def jaxify(x):
    """Converts every numpy array or numpy scalar leaf of a tree of dotdicts to a jax array.

    Python scalars and other objects are left alone, so a geometry's ``id`` stays an int.
    """
    if isinstance(x, dotdict):
        return type(x)({k: jaxify(v) for k, v in x.items()})
    if isinstance(x, (list, tuple)):
        return type(x)(jaxify(v) for v in x)
    if isinstance(x, (np.ndarray, np.generic)):
        import jax.numpy as jnp

        return jnp.asarray(x)
    return x
