"""The aiohttp client session an engine adapter opens when it first needs it."""

from __future__ import annotations

import aiohttp


class LazySession:
    """One aiohttp client session, opened on first use and again after ``close``.

    ``force_close`` opens a new connection per request: for servers that close
    a connection after a streamed answer while announcing keep-alive (as
    llama-server does), where a reused connection fails on the next request.
    """

    def __init__(self, *, force_close: bool = False) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._force_close = force_close

    def __call__(self) -> aiohttp.ClientSession:
        """Return the open session, opening a new one when there is none. Never blocks."""
        if self._session is None or self._session.closed:
            # no connection cap: a pool's slots, not aiohttp's default of 100
            # connections, bound how many engine requests run at once
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=0, force_close=self._force_close
            )
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        """Close the session if one was opened; waits for its connections to close."""
        if self._session is not None:
            await self._session.close()
            self._session = None
