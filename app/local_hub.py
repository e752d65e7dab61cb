"""A local stand-in for the Hugging Face hub (tests and screenshots): a real aiohttp
server speaking the few routes ``huggingface_hub`` uses (model search, repo tree,
resolve with HEAD and Range), serving files in a repo layout. Faults are
scripted: a connection dropped once mid-file, a wrong LFS digest, a paced body
(to watch progress and cancel). Not used by the app itself."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from dataclasses import dataclass, field

from aiohttp import web

COMMIT = "c0ffee" + "0" * 34


@dataclass
class FakeHub:
    """Repos as ``{"owner/name": {"path/in/repo.gguf": bytes}}``; faults below."""

    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    drop_once_after: int | None = None
    """Close the connection after this many body bytes, once."""
    wrong_digest: set[str] = field(default_factory=set)
    """Files whose advertised sha256 is not their content's."""
    chunk_delay_s: float = 0.0
    chunk_size: int = 64 * 1024
    ranges_seen: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen on a free loopback port; returns the base URL (for HF_ENDPOINT)."""
        app = web.Application()
        app.router.add_get("/api/models", self._search)
        app.router.add_get("/api/models/{owner}/{name}/tree/{revision}", self._tree)
        app.router.add_route("*", "/{owner}/{name}/resolve/{revision}/{path:.+}", self._resolve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    def digest(self, repo: str, path: str) -> str:
        if f"{repo}/{path}" in self.wrong_digest:
            return hashlib.sha256(b"something else").hexdigest()
        return hashlib.sha256(self.repos[repo][path]).hexdigest()

    async def _search(self, request: web.Request) -> web.Response:
        query = request.query.get("search", "").lower()
        self.searches.append(query)
        hits = [
            {"id": repo, "modelId": repo, "downloads": 10 * (i + 1), "likes": i, "tags": ["gguf"]}
            for i, repo in enumerate(sorted(self.repos))
            if query in repo.lower()
        ]
        return web.json_response(hits)

    async def _tree(self, request: web.Request) -> web.Response:
        repo = f"{request.match_info['owner']}/{request.match_info['name']}"
        if repo not in self.repos:
            return web.json_response({"error": "Repository not found"}, status=404)
        entries = [
            {
                "type": "file",
                "oid": hashlib.sha1(data).hexdigest(),
                "size": len(data),
                "path": path,
                "lfs": {"oid": self.digest(repo, path), "size": len(data), "pointerSize": 134},
            }
            for path, data in sorted(self.repos[repo].items())
        ]
        return web.json_response(entries)

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        repo = f"{request.match_info['owner']}/{request.match_info['name']}"
        path = request.match_info["path"]
        data = self.repos.get(repo, {}).get(path)
        if data is None:
            code = "RepoNotFound" if repo not in self.repos else "EntryNotFound"
            return web.Response(status=404, headers={"X-Error-Code": code})
        headers = {
            "X-Repo-Commit": COMMIT,
            "ETag": f'"{self.digest(repo, path)}"',
            "Accept-Ranges": "bytes",
        }
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(status=200, headers=headers)
        return await self._body(request, data, headers)

    async def _body(
        self, request: web.Request, data: bytes, headers: dict[str, str]
    ) -> web.StreamResponse:
        start = 0
        if "Range" in request.headers:
            self.ranges_seen.append(request.headers["Range"])
            start = int(request.headers["Range"].removeprefix("bytes=").split("-")[0])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        resp = web.StreamResponse(status=206 if start else 200, headers=headers)
        resp.content_length = len(data) - start
        await resp.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the client canceled the download
            await self._send(request, resp, data, start)
        return resp

    async def _send(
        self, request: web.Request, resp: web.StreamResponse, data: bytes, start: int
    ) -> None:
        """Write ``data`` from ``start`` in chunks (with the scripted faults), then the end.
        Raises ConnectionResetError when the client went away."""
        sent = 0
        for at in range(start, len(data), self.chunk_size):
            chunk = data[at : at + self.chunk_size]
            if self.drop_once_after is not None and sent + len(chunk) > self.drop_once_after:
                await resp.write(chunk[: self.drop_once_after - sent])
                self.drop_once_after = None
                assert request.transport is not None
                request.transport.close()
                return
            await resp.write(chunk)
            sent += len(chunk)
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        await resp.write_eof()
