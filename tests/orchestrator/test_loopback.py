"""The one loopback rule, and the config and API bind checks agreeing on it."""

from __future__ import annotations

import pytest

from app.api import ApiSettings
from app.config import parse_settings
from app.orchestrator.loopback import host_key, is_loopback_address, is_loopback_host

LOOPBACK = ["localhost", "LOCALHOST", "ip6-localhost", "app.localhost", "127.0.0.1", "127.8.0.1"]
LOOPBACK += ["::1", "[::1]", "::ffff:127.0.0.1"]
FOREIGN = [
    "0.0.0.0",
    "::",
    "192.168.1.5",
    "lan-box.example",
    "localhost.example",
    "::ffff:10.0.0.1",
]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", FOREIGN)
def test_foreign_hosts(host: str) -> None:
    assert not is_loopback_host(host)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1", True), ("::1%lo", True), ("::ffff:127.0.0.2", True), ("localhost", False)],
)
def test_peer_addresses_are_never_names(address: str, loopback: bool) -> None:
    assert is_loopback_address(address) is loopback


@pytest.mark.parametrize("host", ["ip6-localhost", "app.localhost", "::1", "0.0.0.0", "lan-box"])
def test_config_and_api_bind_checks_agree(host: str) -> None:
    bind = f"[{host}]:8080" if ":" in host else f"{host}:8080"
    settings = parse_settings({"server": {"bind": bind}}, {"AUTH_TOKEN": "t0ken-for-a-lan-bind"})
    assert settings.is_loopback_bind() is ApiSettings(bind_host=host).is_loopback()
    assert settings.is_loopback_bind() is is_loopback_host(host)


def test_host_names_compare_by_one_key() -> None:
    assert host_key("Box.LAN.") == host_key("box.lan") == "box.lan"
