"""The ``threading.local`` of ``greenserve.patch``: one namespace per greenlet in a hub task.

Strategy: in a hub task, a local object's namespace for the current greenlet lives in a
ContextVar of that object, tagged with the greenlet it belongs to. Each request runs in a fresh
context and a spawned greenlet in a copy of its spawner's, so a request never sees the values
of another one (not even of the request a pooled greenlet served before), and a spawned
greenlet starts with a fresh namespace, as a new thread would. Outside a hub task (plain
threads, the hub's own callbacks) the namespace is per thread, as before.

Attribute access swaps the object's ``__dict__`` for the caller's namespace and then does a
normal lookup, so properties, methods and ``__slots__`` of subclasses behave as with
``threading.local``; like there, ``__init__`` runs again, with the construction arguments, for
every greenlet (or thread) that touches the object first. A lock (reentrant, never waited on
across a greenlet switch by this code) keeps threads from swapping under each other.
"""

from __future__ import annotations

import _thread
import contextvars
import weakref
from typing import Any, Callable, Dict, Tuple

from ..loop.hub import current_greenlet, waitable_hub

Namespace = Dict[str, Any]


class _Impl:
    __slots__ = ("args", "kwargs", "var", "per_thread", "lock")

    def __init__(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        self.args = args
        self.kwargs = kwargs
        self.var: contextvars.ContextVar[Tuple[Any, Namespace]] = contextvars.ContextVar(
            "greenserve.local")
        self.per_thread = _thread._local()
        self.lock = _thread.RLock()

    def namespace(self) -> Tuple[Namespace, bool]:
        """The caller's namespace, and whether it was just made."""
        if waitable_hub() is None:
            ns = getattr(self.per_thread, "ns", None)
            if ns is not None:
                return ns, False
            ns = self.per_thread.ns = {}
            return ns, True
        owner = current_greenlet()
        entry = self.var.get(None)
        if entry is not None and entry[0]() is owner:
            return entry[1], False
        ns = {}
        self.var.set((weakref.ref(owner), ns))
        return ns, True


def _enter(self: "local") -> _Impl:
    """Point ``self.__dict__`` at the caller's namespace (calling ``__init__`` in a new one).
    The caller holds the lock."""
    impl: _Impl = object.__getattribute__(self, "_local__impl")
    ns, new = impl.namespace()
    object.__setattr__(self, "__dict__", ns)
    if new:
        cls = type(self)
        if cls.__init__ is not object.__init__:
            cls.__init__(self, *impl.args, **impl.kwargs)
    return impl


class local:
    """``threading.local`` with one namespace per greenlet in a hub task (see the module doc)."""

    __slots__ = ("_local__impl", "__dict__", "__weakref__")

    def __new__(cls, *args: Any, **kwargs: Any) -> "local":
        if (args or kwargs) and cls.__init__ is object.__init__:
            raise TypeError("Initialization arguments are not supported")
        self = object.__new__(cls)
        impl = _Impl(args, kwargs)
        object.__setattr__(self, "_local__impl", impl)
        # The creator's namespace: type.__call__ runs __init__ in it next.
        object.__setattr__(self, "__dict__", impl.namespace()[0])
        return self

    def __getattribute__(self, name: str) -> Any:
        return _in_namespace(self, object.__getattribute__, name)

    def __setattr__(self, name: str, value: Any) -> None:
        _in_namespace(self, object.__setattr__, _not_dict(self, name), value)

    def __delattr__(self, name: str) -> None:
        _in_namespace(self, object.__delattr__, _not_dict(self, name))


def _in_namespace(self: local, op: Callable[..., Any], *args: Any) -> Any:
    """Run ``op(self, *args)`` on the caller's namespace, under the object's lock."""
    impl: _Impl = object.__getattribute__(self, "_local__impl")
    with impl.lock:
        _enter(self)
        return op(self, *args)


def _not_dict(self: local, name: str) -> str:
    if name == "__dict__":
        raise AttributeError(f"{type(self).__name__!r} object attribute '__dict__' is read-only")
    return name
