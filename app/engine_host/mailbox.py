"""The command mailbox of an engine's owner task.

``Mailbox`` carries commands to the one asyncio task that owns an engine and
starts that task on first use, so only the owner ever changes the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar


class Command(Protocol):
    """A command for an owner task; ``reply`` is set by ``Mailbox.send``."""

    reply: asyncio.Future[str] | None


C = TypeVar("C", bound=Command)


class Mailbox(Generic[C]):
    """The command queue of one owner task, which it starts when a command is sent."""

    def __init__(self, owner: Callable[[], Coroutine[Any, Any, None]], *, name: str) -> None:
        self.commands: asyncio.Queue[C] = asyncio.Queue()
        self._owner = owner
        self._name = name
        self._task: asyncio.Task[None] | None = None

    async def send(self, command: C) -> str:
        """Queue ``command`` (starting the owner task if it is not running) and await its reply.

        Returns the reply; raises what the owner task sets on it.
        """
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._owner(), name=self._name)
        command.reply = asyncio.get_running_loop().create_future()
        self.commands.put_nowait(command)
        return await command.reply

    def post(self, command: C) -> None:
        """Queue ``command`` without a reply and without starting the owner. Never blocks."""
        self.commands.put_nowait(command)

    async def close(self, stop: C) -> None:
        """Post ``stop`` and wait for the owner task to end; returns at once when none runs."""
        task = self._task
        if task is not None and not task.done():
            self.commands.put_nowait(stop)
            await asyncio.shield(task)

    def refuse_queued(self, error: BaseException, *also: C) -> None:
        """Answer every queued command (and ``also``) with ``error``; for the owner's last act."""
        queued = list(also)
        while not self.commands.empty():
            queued.append(self.commands.get_nowait())
        for command in queued:
            if command.reply is not None and not command.reply.done():
                command.reply.set_exception(error)
