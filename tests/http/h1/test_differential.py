"""Differential check: greenserve.http.h1 against independent parsers (tests/http/h1/oracles.py): h11
(a test dependency) and httptools (llhttp), where installed.

- Corpus: every valid case must parse to the same method, target, version, headers, body and
  trailers in each oracle; every invalid case must be refused by each oracle too. Where one
  decides otherwise, the case is listed in ``make_corpus.DIFFERS`` with the RFC rule that
  decides it, and the test asserts that they really differ, so a stale entry is noticed.
- Generated valid requests (strategies.py, ``oracle_safe``): every oracle must agree exactly.
- Mutated requests: where greenserve and an oracle both accept requests, they must be the same
  requests. A parser pair that frames the same bytes into different requests is what request
  smuggling is made of; refusing is always allowed.
"""

from __future__ import annotations

import json
import pathlib
from typing import List, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ._driver import drive, limits_for
from .make_corpus import DIFFERS
from .oracles import ALL_ORACLES, ORACLES, Parsed, first_framing_difference
from .strategies import Case, connections, edits, mutate
from .test_properties import LONG, SETTINGS, slow

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"
CASES = sorted((CORPUS / "valid").glob("*.http")) + sorted((CORPUS / "invalid").glob("*.http"))


def _oracle(name: str):
    if name not in ORACLES:
        pytest.skip(f"{name} is not installed")
    return ORACLES[name]


def _agrees(path: pathlib.Path, theirs: Parsed) -> bool:
    if path.parent.name == "invalid":
        return theirs.error is not None
    expected = json.loads(path.with_suffix(".json").read_text("ascii"))
    return theirs.error is None and theirs.requests == expected


@pytest.mark.parametrize("oracle", ALL_ORACLES)
@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}-{p.stem}" for p in CASES])
def test_oracle_agrees_on_the_corpus_or_the_difference_is_recorded(path: pathlib.Path, oracle: str) -> None:
    parse = _oracle(oracle)
    ours = drive([path.read_bytes()], limits_for(path.stem))
    assert (ours.error is None) == (path.parent.name == "valid")
    theirs = parse(path.read_bytes())
    rule = DIFFERS.get(path.stem, {}).get(oracle)
    if rule is None:
        assert _agrees(path, theirs), f"{oracle} decides otherwise: {theirs}; record it in DIFFERS"
    else:
        assert not _agrees(path, theirs), f"stale DIFFERS entry {path.stem} for {oracle}"


def test_recorded_differences_name_real_cases_and_rules() -> None:
    stems = {p.stem for p in CASES}
    assert set(DIFFERS) <= stems
    for name, by_oracle in DIFFERS.items():
        assert by_oracle and set(by_oracle) <= set(ALL_ORACLES), name
        assert all("RFC" in rule for rule in by_oracle.values()), name


def valid_requests_agree(case: Case) -> None:
    data, expected = case
    assert drive([data]).requests == expected
    for name, parse in ORACLES.items():
        theirs = parse(data)
        assert theirs.error is None, (name, data, theirs.error)
        assert theirs.requests == expected, (name, data)


test_generated_valid_requests_agree_with_every_oracle = SETTINGS(
    given(connections(oracle_safe=True))(valid_requests_agree))
test_generated_valid_requests_agree_long = slow(
    LONG(given(connections(oracle_safe=True))(valid_requests_agree)))


def mutated_requests_never_frame_differently(case: Case, mutations: List[Tuple[str, int, object]]) -> None:
    data = mutate(case[0], mutations)
    ours = drive([data])
    for name, parse in ORACLES.items():
        difference = first_framing_difference(ours.requests, parse(data).requests)
        assert difference is None, (
            f"greenserve and {name} both accept {data!r} but read different requests: "
            f"{difference}")


_mutated = (connections(oracle_safe=True), st.lists(edits, min_size=1, max_size=3))
test_mutated_requests_are_never_framed_differently = SETTINGS(
    given(*_mutated)(mutated_requests_never_frame_differently))
test_mutated_requests_never_framed_differently_long = slow(
    LONG(given(*_mutated)(mutated_requests_never_frame_differently)))
