"""Fixtures for widget tests that need asyncio on the Qt event loop.

``qloop`` installs a ``qasync.QEventLoop`` over the test's QApplication as the
current asyncio loop and returns a ``QtAsync`` helper:

    def test_x(qtbot, qloop):
        qloop.run(some_coroutine())                  # drive the loop until done
        qloop.wait_until(lambda: widget.done, 2.0)   # drive the loop until true

Plain ``async def`` tests run on pytest-asyncio's loop instead (no Qt events).

After a click that schedules a coroutine (``bridge.run``), drive the loop
(``run`` / ``wait_until`` / ``sleep``) before anything else processes Qt events:
a task first stepped by Qt outside the running loop fails with "no running
event loop".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import qasync
from PySide6.QtWidgets import QApplication

from app.ui.app import QtThreadGc

T = TypeVar("T")


class QtAsync:
    """Drives one qasync loop from synchronous test code."""

    def __init__(self, loop: qasync.QEventLoop) -> None:
        self.loop = loop

    def run(self, aw: Awaitable[T], timeout: float = 5.0) -> T:
        """Run ``aw`` on the Qt loop and return its result.

        Raises whatever ``aw`` raises, or TimeoutError after ``timeout`` seconds.
        Blocks the caller (Qt events are processed meanwhile).
        """

        async def bounded() -> T:
            result: T = await asyncio.wait_for(aw, timeout)
            return result

        result: T = self.loop.run_until_complete(bounded())
        return result

    def wait_until(self, pred: Callable[[], Any], timeout: float = 5.0) -> None:
        """Process Qt and asyncio events until ``pred()`` is truthy.

        Raises AssertionError naming the timeout when it never becomes true.
        """

        async def poll() -> None:
            while not pred():  # noqa: ASYNC110 - polls an arbitrary predicate
                await asyncio.sleep(0.005)

        try:
            self.run(poll(), timeout)
        except TimeoutError:
            raise AssertionError(f"condition not met within {timeout} s") from None

    def sleep(self, seconds: float) -> None:
        """Let the loop run for ``seconds``."""
        self.run(asyncio.sleep(seconds), seconds + 5.0)


class _TestLoop(qasync.QEventLoop):  # type: ignore[misc]
    """qasync's loop without the extra ``processEvents`` after ``run_until_complete``.

    qasync processes Qt events once more after the loop stopped, with no running
    loop set; a result that arrives from the backend thread just then would step
    its task outside the loop ("no running event loop"). Tests drive the loop
    only through ``QtAsync``, so nothing is lost by leaving that pass out.
    """

    def run_until_complete(self, future: Awaitable[T]) -> T:
        task = asyncio.ensure_future(future, loop=self)

        def stop(_f: object) -> None:
            self.stop()

        task.add_done_callback(stop)
        try:
            self.run_forever()
        finally:
            task.remove_done_callback(stop)
        if not task.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return task.result()


def _cancel_pending(loop: asyncio.AbstractEventLoop) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


@pytest.fixture
def qloop(qapp: QApplication) -> Iterator[QtAsync]:
    """Yield a QtAsync over a fresh qasync loop set as the current asyncio loop."""
    collector = QtThreadGc()  # backend threads in these tests must not collect Qt objects
    loop = _TestLoop(qapp)
    # plain threads for asyncio.to_thread: qasync's QThread executor leaves Qt
    # thread objects behind that a later test's event processing trips over
    executor = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="qloop")
    loop.set_default_executor(executor)
    asyncio.set_event_loop(loop)
    try:
        yield QtAsync(loop)
    finally:
        _cancel_pending(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)
        collector.stop()


@pytest.fixture(autouse=True)
def _collect_qt_leftovers(qapp: QApplication) -> Iterator[None]:
    """Destroy each test's leftover Qt objects before the next test runs.

    Wrappers collected later, in the middle of another test's event
    processing, can leave Qt delivering events to freed objects.
    """
    yield
    import gc

    from PySide6.QtCore import QCoreApplication, QEvent

    for widget in QApplication.topLevelWidgets():
        widget.close()
        widget.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()
    QCoreApplication.processEvents()
