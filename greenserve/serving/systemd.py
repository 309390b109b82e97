"""systemd integration: socket activation (``LISTEN_FDS``) and readiness (``sd_notify``).

Both follow the documented protocols (sd_listen_fds(3), sd_notify(3)) without linking libsystemd:
- Socket activation: when ``LISTEN_PID`` is this process's pid, descriptors 3 .. 3+LISTEN_FDS-1
  are listening sockets passed by the service manager. The variables are removed from the
  environment once read, so that worker processes and the app do not take them for their own.
- Notification: when ``NOTIFY_SOCKET`` names a datagram socket (a path, or ``@name`` in the
  abstract namespace), state lines such as ``READY=1`` and ``STOPPING=1`` are sent to it. The
  variable is removed from the environment too: only the main process speaks to the manager.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import List, MutableMapping, Optional

from ..errors import ConfigError

log = logging.getLogger("greenserve.error")
LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START


def listen_fds(environ: MutableMapping[str, str], pid: Optional[int] = None) -> List[int]:
    """The descriptors passed by socket activation for this process (empty if none); removes
    LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES from ``environ``. Raises ConfigError when the
    variables are malformed."""
    if "LISTEN_FDS" not in environ:
        return []
    wanted_pid = environ.pop("LISTEN_PID", "")
    count = environ.pop("LISTEN_FDS", "")
    environ.pop("LISTEN_FDNAMES", None)
    if wanted_pid != str(os.getpid() if pid is None else pid):
        return []  # meant for another process (the one that exec'd us, say)
    if not count.isdigit() or not count.isascii():
        raise ConfigError("LISTEN_FDS", f"not a number of descriptors: {count!r}")
    return list(range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)))


class Notifier:
    """Sends sd_notify state lines to the service manager, if there is one."""

    def __init__(self, environ: MutableMapping[str, str]) -> None:
        address = environ.pop("NOTIFY_SOCKET", "")
        self.address: Optional[str] = address or None
        if address.startswith("@"):
            self.address = "\0" + address[1:]  # the abstract namespace

    def notify(self, state: str) -> bool:
        """Send ``state`` (e.g. "READY=1"). Returns whether it was sent; failures are logged,
        never raised: the server runs on without the manager's bookkeeping."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall(state.encode())
        except OSError as exc:
            log.warning("cannot notify the service manager (%s): %s", state, exc)
            return False
        return True
