"""PostgreSQL drivers made cooperative by ``greenserve.patch``: psycopg2 and psycopg 3.

Both drivers speak to the server through libpq in C, so patching ``socket`` does nothing for
them; each offers instead a hook that decides how to wait while libpq would block:

- psycopg2 calls a *wait callback* (``psycopg2.extensions.set_wait_callback``) with the
  connection; the callback polls it and waits for its fd until ``poll()`` says done. With a
  callback set, psycopg2 runs every connection in non-blocking mode (as psycogreen does for
  gevent), in every thread. Where psycopg2 itself has no non-blocking path it refuses with
  ProgrammingError, in every thread: the COPY methods (``copy_from``, ``copy_to``,
  ``copy_expert``) and large objects.
- psycopg 3 (3.2 or later) drives its protocol as generators that yield which direction to
  wait for, and runs them through the module functions ``psycopg.waiting.wait`` and
  ``wait_conn``, looked up at each call; the patch replaces both. COPY, pipelines, server-side
  cursors and ``notifies()`` go through them too.

In a hub task the wait suspends the greenlet on the hub; anywhere else (the thread pool, an
app's own threads) it blocks that thread as before. The hub's interest in a driver's fd is
dropped after every wait: the driver may close the fd, and its number may come back.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import select
from typing import Any, Callable, Generator, List, Optional, Tuple

from ..loop.hub import Hub, waitable_hub

READ, WRITE = 1, 2  # psycopg 3's Wait.R / Wait.W (and Ready), psycopg2's POLL_READ / POLL_WRITE
Undo = Callable[[], None]


def _ready_now(fd: int) -> int:
    """Which of READ and WRITE ``fd`` is ready for right now (0 if neither). Never waits."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLOUT)
    ready = 0
    for _, event in poller.poll(0):
        if event & (select.POLLIN | select.POLLERR | select.POLLHUP):
            ready |= READ
        if event & (select.POLLOUT | select.POLLERR | select.POLLHUP):
            ready |= WRITE
    return ready


def _wait_fd(hub: Hub, fd: int, wanted: int, deadline: Optional[float]) -> int:
    """Wait for ``fd`` to be ready for ``wanted`` (READ, WRITE or both); return which it is.
    May switch. Raises TimeoutError at ``deadline``."""
    try:
        if wanted == READ:
            hub.wait_readable(fd, deadline)
            return READ
        if wanted == WRITE:
            hub.wait_writable(fd, deadline)
            return WRITE
        hub.wait_either(fd, deadline)
        return _ready_now(fd) or wanted
    finally:
        hub.release_fd(fd)


# -- psycopg2 -----------------------------------------------------------------------------------


# psycopg2's poll() states (psycopg2.extensions.POLL_*), stable since psycopg2 2.2
POLL_OK, POLL_READ, POLL_WRITE = 0, 1, 2


def psycopg2_wait(conn: Any) -> None:
    """psycopg2's wait callback: poll ``conn`` until done, waiting on its fd in between. May
    switch, in a hub task; elsewhere it blocks the calling thread. Raises what ``poll()``
    raises, and whatever interrupts the wait (``Cancelled``, a ``Timeout``): psycopg2 then
    closes the connection itself (its query may still run in the server until it ends)."""
    hub = waitable_hub()
    while True:
        state = conn.poll()
        if state == POLL_OK:
            return
        if state not in (POLL_READ, POLL_WRITE):
            raise RuntimeError(f"psycopg2 poll() gave an unknown state: {state}")
        wanted = READ if state == POLL_READ else WRITE
        if hub is None:
            _block_until(conn.fileno(), wanted)
        else:
            _wait_fd(hub, conn.fileno(), wanted, None)


def _block_until(fd: int, wanted: int) -> None:
    """Block the calling thread until ``fd`` is ready for ``wanted`` (poll: any fd number)."""
    poller = select.poll()
    poller.register(fd, (select.POLLIN if wanted & READ else 0)
                    | (select.POLLOUT if wanted & WRITE else 0))
    poller.poll()


def _patch_psycopg2() -> Optional[Undo]:
    ext: Any = importlib.import_module("psycopg2.extensions")  # Any: no stubs needed
    previous = ext.get_wait_callback()
    ext.set_wait_callback(psycopg2_wait)
    return lambda: ext.set_wait_callback(previous)


# -- psycopg 3 ----------------------------------------------------------------------------------

PQGen = Generator[int, int, Any]
PQGenConn = Generator[Tuple[int, int], int, Any]


def _timeout_error() -> BaseException:
    errors: Any = importlib.import_module("psycopg.errors")
    error: BaseException = errors._WaitTimeout("wait timeout expired")
    return error


def _deadline(hub: Hub, timeout: Optional[float]) -> Optional[float]:
    return None if timeout is None else hub.time() + timeout


def _psycopg_wait(original: Callable[..., Any]) -> Callable[..., Any]:
    def wait(gen: PQGen, fileno: int, *args: Any, **kwargs: Any) -> Any:
        """psycopg.waiting.wait: in a hub task, wait on the hub. May switch. The polling
        interval psycopg asks for (to notice a Ctrl-C, or a connection closed under it) is
        not kept: the hub wakes the greenlet when the fd is ready or its timeout passes, and
        a connection must not be closed by another task while one waits on it. Raises
        psycopg's timeout error at ``timeout``, and whatever interrupts the wait (Cancelled,
        a Timeout: then the query may still run in the server; set statement_timeout)."""
        hub = waitable_hub()
        if hub is None:
            return original(gen, fileno, *args, **kwargs)
        deadline = _deadline(hub, kwargs.get("timeout"))
        try:
            wanted = next(gen)
            while True:
                try:
                    ready = _wait_fd(hub, fileno, wanted, deadline)
                except TimeoutError:
                    raise _timeout_error() from None
                wanted = gen.send(ready)
        except StopIteration as done:
            return done.value

    return wait


def _psycopg_wait_conn(original: Callable[..., Any]) -> Callable[..., Any]:
    def wait_conn(gen: PQGenConn, *args: Any, **kwargs: Any) -> Any:
        """psycopg.waiting.wait_conn: like ``wait``, for a connection attempt whose fd may
        change between steps (a host list, a retry). May switch."""
        hub = waitable_hub()
        if hub is None:
            return original(gen, *args, **kwargs)
        deadline = _deadline(hub, kwargs.get("timeout"))
        try:
            fileno, wanted = next(gen)
            while True:
                try:
                    ready = _wait_fd(hub, fileno, wanted, deadline)
                except TimeoutError:
                    raise _timeout_error() from None
                fileno, wanted = gen.send(ready)
        except StopIteration as done:
            return done.value

    return wait_conn


def _patch_psycopg() -> Optional[Undo]:
    waiting: Any = importlib.import_module("psycopg.waiting")
    if "interval" not in inspect.signature(waiting.wait).parameters:
        # Before psycopg 3.2 the wait functions' ``timeout`` was a polling interval, not a
        # deadline (3.2 calls it ``interval``; 3.3 adds a ``timeout`` deadline): hooking them
        # would need the other meaning. Left blocking (the README asks for 3.2 or later).
        return None

    saved = waiting.wait, waiting.wait_conn
    waiting.wait = _psycopg_wait(saved[0])
    waiting.wait_conn = _psycopg_wait_conn(saved[1])

    def undo() -> None:
        waiting.wait, waiting.wait_conn = saved

    return undo


_DRIVERS = {"psycopg2": _patch_psycopg2, "psycopg": _patch_psycopg}


def apply() -> List[Undo]:
    """Hook every PostgreSQL driver that is installed (importing it now: a driver imported
    later, by the app, is the same module). Returns what undoes each hook."""
    undo: List[Undo] = []
    for name, hook in _DRIVERS.items():
        try:
            found = importlib.util.find_spec(name) is not None
        except ValueError:  # in sys.modules without a spec
            found = True
        if not found:
            continue
        try:
            importlib.import_module(name)
        except ImportError:  # installed but unusable here (no libpq): nothing to hook
            continue
        done = hook()
        if done is not None:
            undo.append(done)
    return undo
