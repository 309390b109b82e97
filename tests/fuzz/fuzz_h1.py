"""Coverage-guided fuzzing of the HTTP/1.1 request parser with atheris (libFuzzer for Python).

Run it for N minutes (here 10; the parser corpus is copied in as seeds):

    .venv/bin/pip install atheris && .venv/bin/python tests/fuzz/fuzz_h1.py -max_total_time=600

Each input is one connection's bytes, after a first byte that picks how they are cut and which
limits apply. ``check`` asserts, for every input:

1. nothing but RemoteProtocolError comes out of the parser;
2. the outcome (requests, error status, close) is the same whole, in seeded random cuts and,
   for short inputs, one byte at a time;
3. the parser never buffers more of a head than its limits allow;
4. where greenserve and h11 both accept requests, they are the same requests (two parsers that
   frame the same bytes differently is request smuggling).

A failed check is a crash: atheris prints the traceback and writes the input to
``tests/fuzz/crashes/crash-<sha1>``. Replay one with
``python tests/fuzz/fuzz_h1.py tests/fuzz/crashes/crash-<sha1>``; add it to tests/http/h1/make_corpus.py once fixed.
``check`` needs no atheris: tests/fuzz/test_fuzz_harness.py runs it in the ordinary suite.
"""

from __future__ import annotations

import inspect
import pathlib
import sys
from typing import Any, List, Tuple

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "http"), str(HERE.parent.parent)]  # tests/http/ (for h1.*), the root

from h1._driver import Outcome, drive, random_split  # noqa: E402
from h1.oracles import first_framing_difference, h11_parse  # noqa: E402

from greenserve.http.h1 import Limits  # noqa: E402

CORPUS = HERE.parent / "http" / "h1" / "corpus"
WORK = HERE / "work"  # git-ignored: the growing fuzz corpus
CRASHES = HERE / "crashes"  # git-ignored: inputs that failed a check
SMALL = Limits(max_request_line=64, max_header_bytes=256, max_header_count=8, max_body_size=64)
BYTE_BY_BYTE_UNDER = 600  # inputs shorter than this are also fed one byte at a time


def _summary(outcome: Outcome) -> tuple:
    status = None if outcome.error is None else outcome.error.status_hint
    return outcome.requests, status, outcome.closed, outcome.server_closed


def _bounded(pieces: List[bytes], limits: Limits) -> Outcome:
    """drive(), checking the parser's buffer against the limits after every piece."""
    bound = limits.max_request_line + limits.max_header_bytes + 4 + max(map(len, pieces), default=0)
    outcome = drive(pieces, limits)
    if outcome.conn.request_state.value == "idle":
        assert outcome.conn.buffered <= bound, "the parser buffers more of a head than its limits"
    return outcome


def check(data: bytes) -> None:
    """Run every invariant on one fuzz input (see the module docstring). Raises
    AssertionError, or whatever unexpected error the parser raised."""
    if not data:
        return
    mode, wire = data[0], data[1:]
    limits = SMALL if mode & 1 else Limits()
    whole = _bounded([wire], limits)
    expected = _summary(whole)
    if wire:
        pieces = random_split(wire, mode >> 1)
        assert _summary(_bounded(pieces, limits)) == expected, ("cut", [len(p) for p in pieces])
    if 0 < len(wire) < BYTE_BY_BYTE_UNDER:
        bytewise = [wire[i : i + 1] for i in range(len(wire))]
        assert _summary(_bounded(bytewise, limits)) == expected, "one byte at a time"
    difference = first_framing_difference(whole.requests, h11_parse(wire).requests)
    assert difference is None, ("framed differently from h11", difference)


def seed_directory() -> str:
    """The working corpus (git-ignored): libFuzzer adds the inputs it finds interesting, so it
    is never the parser corpus itself, which is copied in as seeds."""
    WORK.mkdir(parents=True, exist_ok=True)
    for sub in ("valid", "invalid"):
        for path in sorted((CORPUS / sub).glob("*.http")):
            (WORK / f"seed-{path.name}").write_bytes(b"\x00" + path.read_bytes())
    return str(WORK)


def _instrument(atheris: Any, prefixes: Tuple[str, ...]) -> None:
    """Coverage feedback from the parser and the oracle only (instrumenting everything that
    is loaded takes longer than a short run)."""
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(prefixes):
            continue
        for obj in list(vars(module).values()):
            members = vars(obj).values() if inspect.isclass(obj) else [obj]
            for fn in members:
                if inspect.isfunction(fn) and fn.__module__ == name:
                    atheris.instrument_func(fn)


def main(argv: List[str]) -> None:
    import atheris  # imported here: check() and the seeds work without it

    args = list(argv)
    if not any(not a.startswith("-") for a in args[1:]):
        args.append(seed_directory())
    if not any(a.startswith("-artifact_prefix=") for a in args):
        CRASHES.mkdir(parents=True, exist_ok=True)
        args.insert(1, f"-artifact_prefix={CRASHES}/")
    _instrument(atheris, ("greenserve.http.h1", "h11"))
    atheris.Setup(args, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
