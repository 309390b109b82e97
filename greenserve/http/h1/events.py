"""Events exchanged with the sans-I/O HTTP/1.1 connection.

Events are NamedTuples: immutable, without a per-instance dict, and the cheapest records to build
on the hot path on every supported Python (3.9 has no ``dataclass(slots=True)``).
Sentinels that are not messages (``NEED_DATA``, ``PAUSED``) are members of the ``Signal`` enum.
"""

from __future__ import annotations

import enum
from typing import NamedTuple, Tuple

Headers = Tuple[Tuple[bytes, bytes], ...]


class Request(NamedTuple):
    """A request head. Header names are lower-case; values have surrounding whitespace removed."""

    method: bytes
    target: bytes
    http_version: bytes  # b"1.1" or b"1.0"
    headers: Headers


class Data(NamedTuple):
    """A piece of the request body."""

    data: bytes


class EndOfMessage(NamedTuple):
    """The request body is complete. ``trailers`` holds the chunked trailer fields, if any."""

    trailers: Headers = ()


class ConnectionClosed(NamedTuple):
    """The client closed its side cleanly between requests."""


class Signal(enum.Enum):
    """Answers of ``next_event`` that are not messages."""

    NEED_DATA = "need-data"  # feed more bytes with receive_data()
    PAUSED = "paused"  # the request is complete; call start_next_cycle() after the response


NEED_DATA = Signal.NEED_DATA
PAUSED = Signal.PAUSED
