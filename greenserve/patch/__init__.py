"""greenserve.patch: make the standard library's blocking calls cooperative in greenserve's hub.

    import greenserve.patch
    greenserve.patch.apply()     # first thing, before the app and its libraries are imported
    greenserve --patch myapp:app   # the same from the command line (GREENSERVE_PATCH=1)

Nothing is patched on import. ``apply()`` replaces, in place:

- ``socket.socket`` (so ``create_connection``, ``socketpair``, ``fromfd`` and ``accept`` make
  cooperative sockets too), and ``socket.getaddrinfo``, ``gethostbyname``, ``gethostbyname_ex``,
  ``gethostbyaddr`` and ``getnameinfo``, which resolve in a pool thread;
- ``ssl.SSLContext.sslsocket_class``: what ``wrap_socket`` makes (handshake, reads, writes);
- ``time.sleep``;
- ``select.select`` and ``selectors.DefaultSelector``;
- ``threading.local``: one namespace per greenlet (per request) instead of per thread;
- ``threading.Lock`` and ``threading.RLock`` (owned by a greenlet, not a thread), and with them
  every ``Condition``, ``Semaphore``, ``Event``, ``Barrier`` and ``queue.Queue`` made afterwards;
  ``queue.SimpleQueue`` becomes the pure-Python one built on them. They still exclude across
  real threads (the thread pool, an app's own threads), so a connection pool shared by both
  works;
- the PostgreSQL drivers, where installed (``apply()`` imports them to hook them): psycopg2's
  wait callback and psycopg 3's wait functions (see ``copsycopg``). Pure-Python drivers
  (PyMySQL, pg8000, redis-py...) need nothing more than the patched socket.

A patched call is cooperative when it runs in a hub task (a request's greenlet, or one made by
``greenserve.spawn``); anywhere else, other threads included, it behaves as before. Code that
kept a reference before ``apply()`` (``from socket import socket``, a socket made earlier, a
lock made at import) keeps the blocking original: apply the patch before importing the app.

``threading.Thread`` stays a real OS thread: code that starts a thread wants it to run while
its starter waits (a reader thread, a pool's maintenance thread), and a greenlet would only
run when the starter yields. Its locks and queues shared with hub tasks are the patched ones,
so handing work and results across works both ways.

What stays blocking, and blocks every request of the server while it runs: C extensions doing
their own I/O (mysqlclient, grpc, librdkafka...), file and disk I/O, ``subprocess`` waits,
``os.read``/``os.write`` on pipes, ``select.poll``/``epoll`` objects,
``threading.Thread.join`` (a real thread's end) and locks made before ``apply()`` or straight
from ``_thread``. Wrap such calls in ``greenserve.run_in_thread``. What no longer works:
psycopg2's COPY methods and large objects, which psycopg2 refuses (ProgrammingError, in every
thread) once a wait callback is set; use psycopg 3 for those. ``undo()`` restores everything
(for tests).
"""

from __future__ import annotations

import select
import selectors
import socket
import queue
import threading
import time
from typing import Any, Callable, List, Tuple

from . import colocal, colock, copsycopg, coselect, cosocket
from ..loop import tasks

_saved: List[Tuple[Any, str, Any]] = []  # (owner, attribute, original), in patching order
_hooks: List[Callable[[], None]] = []  # what undoes the database drivers' wait hooks


def _targets() -> List[Tuple[Any, str, Any]]:
    targets: List[Tuple[Any, str, Any]] = [(socket, "socket", cosocket.CoopSocket)]
    targets += [(socket, name, fn) for name, fn in cosocket.LOOKUPS.items()]
    targets += [
        (time, "sleep", tasks.sleep),
        (select, "select", coselect.cooperative_select),
        (selectors, "DefaultSelector", coselect.CooperativeSelector),
        (threading, "local", colocal.local),
        # Condition, Semaphore, Event, Barrier and queue.Queue make their locks through these
        # names when they are built, so they become cooperative with them.
        (threading, "Lock", colock.CoopLock),
        (threading, "_allocate_lock", colock.CoopLock),
        (threading, "RLock", colock.CoopRLock),
        (queue, "SimpleQueue", queue._PySimpleQueue),  # type: ignore[attr-defined]
    ]
    try:
        import ssl

        from .cossl import CoopSSLSocket
    except ImportError:  # Python built without ssl
        return targets
    return targets + [(ssl.SSLContext, "sslsocket_class", CoopSSLSocket)]


def apply() -> None:
    """Patch the standard library (see the module doc). Applying twice changes nothing."""
    if _saved:
        return
    for owner, name, replacement in _targets():
        _saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)
    _hooks.extend(copsycopg.apply())


def undo() -> None:
    """Put back everything ``apply()`` replaced. Objects made meanwhile stay cooperative."""
    while _hooks:
        _hooks.pop()()
    while _saved:
        owner, name, original = _saved.pop()
        setattr(owner, name, original)


def applied() -> bool:
    """Whether the patch is in place."""
    return bool(_saved)
