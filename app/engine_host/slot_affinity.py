"""Which llama-server slot a request goes to, so a session's turns find their KV cache.

One ``SlotAffinity`` per engine process, used from the event loop only (the
pool's streams acquire and release). Pure bookkeeping: no I/O, no clock.
"""

from __future__ import annotations

ANY_SLOT = -1


class SlotAffinity:
    """Slot choice for ``slots`` slots: a session keeps its slot while no one else took it."""

    def __init__(self, slots: int) -> None:
        self._slots = slots
        self._busy: set[int] = set()
        self._holder: dict[int, str | None] = {}  # slot -> session whose prompt it caches
        self._order: list[int] = list(range(slots))  # least recently used first

    def acquire(self, session_id: str | None) -> tuple[int, bool]:
        """Return ``(slot, warm)`` for a request: ``warm`` when the slot still caches
        this session's last turn. ``ANY_SLOT`` when every slot is busy (the engine
        queues it then). Release the slot with ``release``."""
        mine = self._slot_of(session_id)
        if mine is not None and mine not in self._busy:
            return self._take(mine, session_id), True
        free = [s for s in self._order if s not in self._busy]
        if not free:
            return ANY_SLOT, False
        unheld = [s for s in free if self._holder.get(s) is None]
        return self._take((unheld or free)[0], session_id), False

    def release(self, slot: int) -> None:
        """Mark ``slot`` idle again (a no-op for ``ANY_SLOT``)."""
        self._busy.discard(slot)

    def _slot_of(self, session_id: str | None) -> int | None:
        if session_id is None:
            return None
        return next((s for s, held in self._holder.items() if held == session_id), None)

    def _take(self, slot: int, session_id: str | None) -> int:
        self._busy.add(slot)
        self._holder[slot] = session_id
        self._order.remove(slot)
        self._order.append(slot)
        return slot
