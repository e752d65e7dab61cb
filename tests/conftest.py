"""Shared fixtures for every layer."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Switch off automatic garbage collection for the run (see ``pytest_runtest_protocol``)."""
    gc.disable()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what collection imported, so that the collection after each test is cheap.

    The modules, classes and constants loaded while collecting (about 370,000 objects)
    live for the whole run; left in the collector's generations, every collection would
    walk them again (close to a second each).
    """
    gc.collect()
    gc.freeze()


_UNFROZEN_LIMIT = 50_000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Collect garbage after each test, once its fixtures are gone (a safe point).

    An automatic collection can start inside a Qt call (an allocation while Qt
    holds its signal-slot lock) and destroy a Qt object there, which deadlocks
    or crashes; the desktop app avoids this the same way (``QtThreadGc``). What
    outlives many tests (modules imported late, session fixtures) is frozen once it
    passes ``_UNFROZEN_LIMIT`` objects, for the same reason as at collection.
    """
    yield
    gc.collect()
    if len(gc.get_objects()) > _UNFROZEN_LIMIT:
        gc.freeze()


@pytest.fixture(scope="session")
def demo_gguf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Return the bytes of the generated demo model (a real, small GGUF file)."""
    from app.engine_host.demo_model import write_demo_model

    return write_demo_model(tmp_path_factory.mktemp("demo") / "demo.gguf").read_bytes()


@pytest.fixture(autouse=True)
def _no_modal_dialogs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a Qt test that opens a modal dialog instead of hanging the whole run.

    A modal dialog runs its own event loop in C++, where pytest-timeout's alarm
    never reaches Python: without this, one forgotten ``ask`` blocks CI until its
    limit. A timer (on the Qt thread, so it runs inside the dialog's loop too)
    closes any modal widget and the test fails naming its title.
    """
    if "PySide6.QtWidgets" not in sys.modules:
        yield
        return
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    if QApplication.instance() is None:
        yield
        return
    opened: list[str] = []

    def close_modal() -> None:
        widget = QApplication.activeModalWidget()
        if widget is not None:
            opened.append(widget.windowTitle() or type(widget).__name__)
            widget.close()

    timer = QTimer()
    timer.timeout.connect(close_modal)
    timer.start(500)
    try:
        yield
    finally:
        timer.stop()
    assert not opened, f"the test opened a modal dialog (closed by the guard): {opened}"
