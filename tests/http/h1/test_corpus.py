"""Replay the raw-request corpus (tests/http/h1/corpus/) through H1Connection.

Each file is fed whole, line by line (cut after every LF), one byte at a time and in seeded
random cuts; the outcome must not depend on the cut. Valid files must produce exactly the
requests in their sidecar JSON; invalid files must fail with RemoteProtocolError carrying the
status their name starts with, and the connection must refuse to parse anything afterwards.

Corpus names (written by make_corpus.py): ``valid/<name>.http`` + ``valid/<name>.json``,
``invalid/<status>-<name>.http``. A name ending in ``@key=value,...`` runs with those parser
Limits: ``line`` = max_request_line, ``head`` = max_header_bytes, ``count`` = max_header_count,
``body`` = max_body_size.

Cases where greenserve.http.h1 is known to be wrong are listed in KNOWN_BUGS with the RFC rule and
marked ``xfail(strict=True)``: when the parser is fixed, the mark must go.
"""

from __future__ import annotations

import json
import pathlib
from typing import Dict, FrozenSet, Iterator, List, Tuple

import pytest

from greenserve.http.h1 import RemoteProtocolError, RequestState

from . import make_corpus
from ._driver import MODES, drive, limits_for, splits, status_of

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"
VALID = sorted((CORPUS / "valid").glob("*.http"))
INVALID = sorted((CORPUS / "invalid").glob("*.http"))
ALL_MODES: FrozenSet[str] = frozenset(MODES)

KNOWN_BUGS: Dict[str, Tuple[FrozenSet[str], str]] = {}


def _params(files: List[pathlib.Path]) -> Iterator[object]:
    for path in files:
        modes, reason = KNOWN_BUGS.get(path.stem, (frozenset(), ""))
        for mode in MODES:
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if mode in modes else []
            yield pytest.param(path, mode, id=f"{path.stem}-{mode}", marks=marks)


@pytest.mark.parametrize("path,mode", _params(VALID))
def test_valid(path: pathlib.Path, mode: str) -> None:
    expected = json.loads(path.with_suffix(".json").read_text("ascii"))
    data = path.read_bytes()
    for pieces in splits(data, mode):
        outcome = drive(pieces, limits_for(path.stem))
        where = f"{path.name} cut {[len(p) for p in pieces][:30]}"
        assert outcome.error is None, f"{where}: {outcome.error!r}"
        assert outcome.requests == expected, where
        assert outcome.closed or outcome.server_closed, where


@pytest.mark.parametrize("path,mode", _params(INVALID))
def test_invalid(path: pathlib.Path, mode: str) -> None:
    status = status_of(path.stem)
    data = path.read_bytes()
    for pieces in splits(data, mode):
        outcome = drive(pieces, limits_for(path.stem))
        where = f"{path.name} cut {[len(p) for p in pieces][:30]}"
        assert outcome.error is not None, f"{where}: accepted as {outcome.requests}"
        assert outcome.error.status_hint == status, f"{where}: {outcome.error!r}"
        conn = outcome.conn
        assert conn.request_state is RequestState.ERROR
        assert conn.keep_alive is False
        # Nothing after the error is parsed, not even a fresh valid request.
        for more in (b"", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"):
            conn.receive_data(more)
            with pytest.raises(RemoteProtocolError) as again:
                conn.next_event()
            assert again.value.status_hint == status
        assert conn.buffered <= len(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")


def test_error_response_closes_connection() -> None:
    outcome = drive([b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"])
    assert outcome.error is not None and outcome.error.status_hint == 400
    head = outcome.conn.send_response(400, b"Bad Request", [(b"Content-Length", b"0")], b"")
    assert head == b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def test_corpus_files_are_what_the_generator_writes() -> None:
    """Guards the bytes on disk (CRLF not rewritten by git or an editor) and the sidecars."""
    rendered = make_corpus.render()
    on_disk = {
        f"{p.parent.name}/{p.name}": p.read_bytes()
        for sub in ("valid", "invalid") for p in (CORPUS / sub).iterdir()
    }
    assert sorted(on_disk) == sorted(rendered)
    for rel, content in rendered.items():
        assert on_disk[rel] == content, rel


def test_corpus_shape() -> None:
    assert len(VALID) >= 40 and len(INVALID) >= 100
    for path in VALID:
        assert path.with_suffix(".json").is_file(), path.name
        assert b"\r\n" in path.read_bytes()
    statuses = {status_of(p.stem) for p in INVALID}
    assert statuses == {400, 413, 414, 417, 431, 501, 505}
    attributes = pathlib.Path(__file__).resolve().parents[3] / ".gitattributes"
    assert "tests/http/h1/corpus/** -text" in attributes.read_text().splitlines()
