"""A wildcard bind is shown as the addresses a LAN client can use."""

from __future__ import annotations

from app.ui.api_urls import reachable_urls


def test_a_specific_host_is_kept() -> None:
    assert reachable_urls("http://127.0.0.1:8080", ["10.0.0.2"]) == ["http://127.0.0.1:8080"]


def test_ipv4_wildcard_gives_one_url_per_ipv4_address_loopback_last() -> None:
    addresses = ["127.0.0.1", "::1", "192.168.1.5", "fd00::2", "10.0.0.2"]
    assert reachable_urls("http://0.0.0.0:8090", addresses) == [
        "http://192.168.1.5:8090",
        "http://10.0.0.2:8090",
        "http://127.0.0.1:8090",
    ]


def test_ipv6_wildcard_brackets_addresses_and_no_address_falls_back_to_loopback() -> None:
    assert reachable_urls("http://[::]:8090", ["fd00::2"]) == ["http://[fd00::2]:8090"]
    assert reachable_urls("http://0.0.0.0:8090", []) == ["http://127.0.0.1:8090"]
