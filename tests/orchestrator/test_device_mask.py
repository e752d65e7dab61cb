"""The one device-mask parser, as the core, the config and the pools view use it."""

from __future__ import annotations

import pytest

from app.config import PoolSettings
from app.orchestrator.device_mask import device_indices


@pytest.mark.parametrize(
    ("mask", "indices"),
    [("0", (0,)), ("0,1", (0, 1)), ("2, 0", (2, 0)), ("cpu", ()), ("mock", ()), ("", ())],
)
def test_device_indices(mask: str, indices: tuple[int, ...]) -> None:
    assert device_indices(mask) == indices


def test_config_pool_uses_the_same_parser() -> None:
    assert PoolSettings(id="a", model="", device_mask="1,3").gpu_indices() == (1, 3)
    assert PoolSettings(id="b", model="", device_mask="cpu").gpu_indices() == ()
