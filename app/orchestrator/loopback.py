"""The one loopback rule: which host names and addresses only reach this machine,
and how host names compare.

Used by the config's bind check, the API's start-up bind check, its Host and
Origin checks and its peer check, and the settings dialog. Pure; never does a
DNS lookup.
"""

from __future__ import annotations

import functools
import ipaddress

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})


def host_key(name: str) -> str:
    """Return ``name`` as host names compare: lower case, without the root's trailing dot."""
    return name.lower().rstrip(".")


def peer_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Return the address ``text`` spells, or None for anything else (a host name).

    An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) becomes its IPv4
    address; an IPv6 zone (``::1%lo``) is dropped.
    """
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@functools.lru_cache(maxsize=1024)
def is_loopback_address(text: str) -> bool:
    """Return True for an address in 127.0.0.0/8 or ``::1`` (as ``peer_address`` reads
    it); a host name returns False. Remembers the last 1,024 answers (asked per request)."""
    addr = peer_address(text)
    return addr is not None and addr.is_loopback


@functools.lru_cache(maxsize=1024)
def is_loopback_host(host: str) -> bool:
    """Return True for a loopback name (``localhost``, ``*.localhost``) or address.

    Case-insensitive; accepts IPv6 with or without brackets; any other host
    name counts as non-loopback. Remembers the last 1,024 answers.
    """
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return text in LOOPBACK_NAMES or text.endswith(".localhost") or is_loopback_address(text)
