"""Every error code of the taxonomy maps to one plain sentence, with its action."""

from __future__ import annotations

import re

import pytest

from app.orchestrator import errors
from app.orchestrator.contracts import ErrorCode
from app.ui.error_text import ERRORS, Action, explain

EXCEPTION_NAMES = {
    name
    for name, obj in vars(errors).items()
    if isinstance(obj, type) and issubclass(obj, Exception)
} | {"Exception", "ValueError", "RuntimeError", "TimeoutError", "OSError"}

RAW = "no pool: demo skipped: draining; check GET /v1/pools (POOL_UNAVAILABLE, HTTP 503)"


def plain(sentence: str) -> None:
    assert "HTTP" not in sentence
    assert "GET /" not in sentence and "/v1/" not in sentence
    assert not re.search(r"\b[1-5]\d\d\b", sentence), sentence  # no status numbers
    assert not EXCEPTION_NAMES & set(re.findall(r"[A-Za-z]+", sentence)), sentence
    assert not re.search(r"\b[A-Z]+_[A-Z_]+\b", sentence), sentence  # no raw codes
    assert sentence.endswith((".", "s")) and sentence[0].isupper()


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_has_a_plain_sentence(code: ErrorCode) -> None:
    assert code in ERRORS
    for kw in ({}, {"pool_id": "gpu0"}, {"retry_after_ms": 1500}, {"paused_pool": "demo"}):
        explained = explain(code, RAW, **kw)
        plain(explained.sentence)
        assert explained.details == f"{code}: {RAW}"
        assert "{" not in explained.sentence


def test_situations_with_their_own_sentence_and_button() -> None:
    full = explain(ErrorCode.ADMISSION_REJECT, "", pool_id="gpu0", retry_after_ms=3400)
    assert full.sentence.startswith("The queue of pool gpu0 is full. Wait about 3 s")
    assert full.action is Action.OPEN_SETTINGS and full.action_label == "Open Settings"
    paused = explain(ErrorCode.POOL_UNAVAILABLE, RAW, paused_pool="demo")
    assert paused.sentence == "Pool demo is paused. Resume it to get an answer."
    assert (paused.action, paused.pool_id) == (Action.RESUME_POOL, "demo")
    assert explain(ErrorCode.POOL_UNAVAILABLE).action is Action.OPEN_MODELS
    assert explain(ErrorCode.INTERNAL).action_label == "Open Tasks & logs"


def test_an_unknown_code_still_gets_a_sentence() -> None:
    explained = explain("NOT_FOUND", "task 'x' not found")
    plain(explained.sentence)
    assert explained.details == "NOT_FOUND: task 'x' not found"
