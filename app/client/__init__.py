"""Clients of a running llama-orch server over its public HTTP API.

:mod:`app.client.http` is the request/SSE layer (it reuses ``app.ask``'s SSE
reader); :mod:`app.client.http_bridge` is the window's ``Bridge`` over it, used
by ``llama-orch gui --connect URL``.
"""
