"""What compiled classes are declared with. The parts of ``Connection`` (body.py's BodyReader,
respond.py's Responder) and of ``Hub`` (fds.py's FdTable, timers.py's TimerHeap) are mypyc
traits, the one kind of second base class a compiled class may have. Interpreted, a
trait is a plain class: ``slotted`` remakes it with empty ``__slots__`` (the connection
declares every slot) so that a pure-Python connection has no ``__dict__``. A slot list in the
class body itself is what mypy and mypyc cannot take: mypy then refuses the assignments to
the connection's attributes, and mypyc refuses a conditional statement in a class body.

Use::

    from .._traits import interpreted, slotted, trait

    @trait
    class Part: ...

    if interpreted(__file__):
        globals()["Part"] = slotted(Part)

(A plain ``if not TYPE_CHECKING:`` block is compiled by mypyc into a RuntimeError, and mypy
refuses to assign to a class name.) A method that a trait's code calls but the class defines is
declared in the trait as a method that raises NotImplementedError, not as an annotated
attribute: mypyc reads an annotation as a field, which the method would never fill.
``mypyc_attr`` passes mypyc's class options through (a stand-in where mypy is not installed).
This module itself is never compiled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr as mypyc_attr  # mypyc knows them by these names
    from mypy_extensions import trait as trait
else:
    try:
        from mypy_extensions import mypyc_attr, trait
    except ImportError:  # not installed (a build without mypy): nothing was compiled

        def trait(cls: Any) -> Any:
            return cls

        def mypyc_attr(*attrs: str, **kwattrs: object) -> Any:
            return lambda cls: cls


def interpreted(module_file: str) -> bool:
    """Whether the module whose ``__file__`` this is runs from source or bytecode (a compiled
    module is an extension: .so, or .pyd on Windows)."""
    return not module_file.endswith((".so", ".pyd"))


def slotted(cls: Any) -> Any:
    """``cls`` made again with ``__slots__ = ()``. Interpreted builds only."""
    body = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    body["__slots__"] = ()
    return type(cls)(cls.__name__, cls.__bases__, body)
