"""`@frozen`: immutable value classes, what `@dataclass(frozen=True)` gives the spec types.

Why not dataclasses: importing it (it pulls in inspect, ast, tokenize) and generating the
methods of the spec's classes costs ~10 ms, a sixth of `pyctr run --network none`'s whole
start time, which is a benchmark target. This decorator reads the fields from the class's
annotations and defaults from its class attributes, and gives keyword or positional
__init__ (then __post_init__ if defined), read-only attributes, __eq__, __hash__ and
__repr__ over the fields in order, plus `replace()`.
"""

from __future__ import annotations

# No typing import at run time either (it costs ~2 ms): annotations here are strings only.
_MISSING = object()


class FrozenInstanceError(AttributeError):
    pass


def frozen(cls: type) -> type:
    names = tuple(cls.__dict__.get("__annotations__", {}))
    defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__}() takes at most {len(names)} positional arguments")
        values = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names or key in values:
                raise TypeError(f"{cls.__name__}() got an unexpected or repeated argument {key!r}")
            values[key] = value
        for name in names:
            value = values.get(name, defaults.get(name, _MISSING))
            if value is _MISSING:
                raise TypeError(f"{cls.__name__}() missing argument {name!r}")
            object.__setattr__(self, name, value)
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def _values(self) -> tuple:
        return tuple(getattr(self, n) for n in names)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return _values(self) == _values(other)

    def __hash__(self) -> int:
        return hash((cls.__name__,) + _values(self))

    def __repr__(self) -> str:
        return f"{cls.__name__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in names) + ")"

    def replace(self, **changes: Any) -> Any:
        return cls(**{**{n: getattr(self, n) for n in names}, **changes})

    for method in (__init__, __setattr__, __delattr__, __eq__, __hash__, __repr__, replace):
        method.__qualname__ = f"{cls.__qualname__}.{method.__name__}"
        if method.__name__ == "__repr__" and "__repr__" in cls.__dict__:
            continue  # a class's own __str__/__repr__ wins
        setattr(cls, method.__name__, method)
    cls.__match_args__ = names  # type: ignore[attr-defined]
    cls.__fields__ = names  # type: ignore[attr-defined]
    return cls
