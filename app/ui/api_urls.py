"""The API addresses a person can actually use: a wildcard bind (0.0.0.0 or ::) becomes
one URL per interface address, loopback first."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from PySide6.QtNetwork import QAbstractSocket, QHostAddress, QNetworkInterface

WILDCARDS = {"0.0.0.0": QAbstractSocket.NetworkLayerProtocol.IPv4Protocol, "::": None}


def reachable_urls(url: str, addresses: Sequence[str]) -> list[str]:
    """Return ``url`` itself, or for a wildcard host one URL per address in ``addresses``
    in their order (IPv6 ones in brackets; loopback addresses last). Pure; never raises."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host not in WILDCARDS:
        return [url]
    port = f":{parts.port}" if parts.port else ""
    ipv4_only = host == "0.0.0.0"
    picked = [a for a in addresses if not (ipv4_only and ":" in a)]
    ordered = sorted(picked, key=lambda a: a.startswith(("127.", "::1")))  # stable
    urls = [f"{parts.scheme}://{f'[{a}]' if ':' in a else a}{port}" for a in ordered]
    return urls or [url.replace(host, "127.0.0.1", 1)]


def interface_addresses() -> list[str]:
    """Return this machine's interface addresses (no link-local IPv6). Cheap; never raises."""
    out = []
    for address in QNetworkInterface.allAddresses():
        if address.protocol() == QAbstractSocket.NetworkLayerProtocol.IPv6Protocol and (
            address.isLinkLocal()
        ):
            continue
        out.append(QHostAddress(address.toString().split("%")[0]).toString())
    return out


def api_urls(url: str) -> list[str]:
    """Return the usable URLs of the API bound at ``url``."""
    return reachable_urls(url, interface_addresses())


def lan_addresses() -> list[str]:
    """Return this machine's non-loopback, non-link-local IPv4 addresses, sorted (may be
    empty). Cheap; never raises."""
    found = {
        a for a in interface_addresses() if ":" not in a and not a.startswith(("127.", "169.254."))
    }
    return sorted(found)
