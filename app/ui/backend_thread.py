"""The backend's own thread: a native asyncio loop for the core, engines and API.

The desktop app keeps the Qt thread for the UI (qasync) and runs everything
else here, so a busy window never delays LAN clients and the core does not pay
qasync's per-callback overhead. The thread owns the backend's whole life:
``start()`` runs on its loop, then the loop serves until ``stop()`` is asked or
the loop dies, and in both cases the backend's stop function runs on that same
loop before the loop is closed, so engines are stopped even after a crash.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

log = logging.getLogger("llama_orch.ui")

T = TypeVar("T")
R = TypeVar("R")
StopFn = Callable[[], Awaitable[None]]
Starter = Callable[[], Awaitable[tuple[T, StopFn]]]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class BackendThread(Generic[T]):
    """Runs ``start()`` -> serve -> its stop function on a dedicated thread.

    ``on_error(message)`` is called on the backend thread for an unhandled
    error in a backend task or callback; ``on_crash(message)`` once when the
    loop dies without being asked to stop (after the backend was stopped).
    """

    def __init__(
        self,
        start: Starter[T],
        *,
        on_error: Callable[[str], None] = lambda _m: None,
        on_crash: Callable[[str], None] = lambda _m: None,
        loop_factory: LoopFactory = asyncio.new_event_loop,
        name: str = "llama-orch-backend",
    ) -> None:
        self._start = start
        self.on_error = on_error
        self.on_crash = on_crash
        self._serving = False
        self._loop_factory = loop_factory
        self._started: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._stop_asked = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """Return the backend's loop (after ``start``)."""
        assert self._loop is not None, "the backend thread has not started"
        return self._loop

    @property
    def serving(self) -> bool:
        """Return True from a successful start until the loop stops serving."""
        return self._serving

    def start(self, timeout: float = 120.0) -> T:
        """Start the thread and return what the starter returned (its first item).

        Blocks until the backend started. Raises whatever the starter raised (the
        thread has ended then), or TimeoutError.
        """
        self._thread.start()
        return self._started.result(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the loop to stop, then wait until the backend's stop function ran and
        the loop closed. Blocks (up to ``timeout`` s); safe to call more than once."""
        self._stop_asked = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(loop.stop)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def call(self, coro: Coroutine[Any, Any, R]) -> concurrent.futures.Future[R]:
        """Schedule ``coro`` on the backend loop; return its concurrent future.
        Never blocks. Raises RuntimeError when the loop is closed."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    # ---- the thread ---------------------------------------------------------------

    def _main(self) -> None:
        loop = self._loop_factory()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(self._loop_error)
        stop: StopFn | None = None
        crash: str | None = None
        try:
            value, stop = loop.run_until_complete(self._start())
            self._serving = True
            self._started.set_result(value)
            loop.run_forever()
            if not self._stop_asked:
                crash = "the backend's event loop stopped"
        except BaseException as exc:  # the thread must always stop the backend
            if not self._started.done():
                self._started.set_exception(exc)
            else:
                log.critical("the backend crashed", exc_info=exc)
                crash = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            self._serving = False
            self._finish(loop, stop)
        if crash is not None:
            self.on_crash(crash)

    def _finish(self, loop: asyncio.AbstractEventLoop, stop: StopFn | None) -> None:
        try:
            if stop is not None:
                loop.run_until_complete(_as_coroutine(stop()))
        except BaseException:
            log.exception("stopping the backend failed")
        finally:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message") or "error in the backend")
        log.error("backend loop: %s", message, exc_info=exc)
        self.on_error(f"{message}: {exc}" if exc else message)


async def _as_coroutine(aw: Awaitable[T]) -> T:
    return await aw


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
