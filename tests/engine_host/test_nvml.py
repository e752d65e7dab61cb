"""NvmlInventory over a scripted NVML backend (the true boundary), and its formatting."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import pytest

from app.engine_host.nvml import (
    NO_GPU_HINT,
    NvmlInventory,
    NvmlUnavailableError,
    format_bytes,
    format_inventory,
    inventory_to_json,
)
from app.orchestrator.ports import GpuInventory
from tests.engine_host.fake_nvml import (
    GIB,
    MIB,
    FakeClock,
    FakeNvml,
    rtx3090,
    rtx4060ti,
)


def inventory(backend: FakeNvml, pids: Callable[[], Sequence[int]] = lambda: ()) -> NvmlInventory:
    return NvmlInventory(backend, clock=FakeClock(), engine_pids=pids)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            NvmlUnavailableError("Driver Not Loaded", driver_missing=True),
            "No NVIDIA driver found (NVML: Driver Not Loaded). Install the NVIDIA driver",
        ),
        (
            NvmlUnavailableError("NVML Shared Library Not Found", driver_missing=True),
            "No NVIDIA driver found (NVML: NVML Shared Library Not Found).",
        ),
        (
            NvmlUnavailableError("Insufficient Permissions", driver_missing=False),
            "NVML could not start (NVML: Insufficient Permissions). Check that `nvidia-smi`",
        ),
        (
            NvmlUnavailableError(
                "the NVML Python binding is missing (No module named 'pynvml'); "
                "install nvidia-ml-py",
                driver_missing=False,
            ),
            "GPU discovery is off: the NVML Python binding is missing",
        ),
        (OSError("libnvidia-ml.so.1: cannot open"), "NVML could not start (NVML: libnvidia"),
    ],
)
def test_unavailable_nvml_is_an_empty_inventory_with_one_hint(
    error: Exception, expected: str
) -> None:
    inv = inventory(FakeNvml(gpus=[rtx3090()], init_error=error)).read()

    assert inv.gpus == ()
    assert inv.hint is not None
    assert inv.hint.startswith(expected)
    assert inv.hint.endswith("or run CPU-only pools with allow_cpu_inference = true.")
    assert inv.at == 1_700_001_000.0


def test_failed_start_is_retried_on_next_read() -> None:
    backend = FakeNvml(gpus=[rtx3090()], init_error=RuntimeError("Unknown Error"))
    reader = inventory(backend)
    assert reader.read().gpus == ()

    backend.init_error = None
    assert len(reader.read().gpus) == 1
    reader.read()
    assert backend.calls.count("init") == 2


def test_no_gpu_is_empty_with_hint_and_driver() -> None:
    inv = inventory(FakeNvml(gpus=[])).read()

    assert inv == GpuInventory(
        gpus=(), at=inv.at, hint=NO_GPU_HINT, driver_version="550.54.14", cuda_version="12.4"
    )
    assert NO_GPU_HINT.startswith("NVML found no GPU")


def test_device_count_failure_becomes_hint_and_restarts_nvml() -> None:
    backend = FakeNvml(gpus=[rtx3090()], count_error=RuntimeError("GPU is lost"))
    reader = inventory(backend)

    inv = reader.read()

    assert inv.gpus == ()
    assert inv.hint is not None
    assert "GPU is lost" in inv.hint
    assert backend.calls == ["init", "shutdown"]


def test_two_mixed_gpus_are_listed_with_all_fields() -> None:
    inv = inventory(FakeNvml(gpus=[rtx3090(), rtx4060ti(temp=41.0)])).read()

    assert inv.hint is None
    assert (inv.driver_version, inv.cuda_version) == ("550.54.14", "12.4")
    first, second = inv.gpus
    assert (first.index, first.name, first.uuid) == (0, "NVIDIA GeForce RTX 3090", "GPU-3090")
    assert first.vram_total_bytes == 24 * GIB
    assert first.vram_used_bytes == 2 * GIB
    assert first.vram_free_bytes == 22 * GIB
    assert first.compute_capability == "8.6"
    assert (first.utilization_pct, first.temperature_c, first.power_w) == (10.0, 50.0, 120.5)
    assert (second.index, second.compute_capability, second.temperature_c) == (1, "8.9", 41.0)
    assert second.vram_total_bytes == 16 * GIB


def test_a_field_that_fails_is_none_and_others_are_read() -> None:
    backend = FakeNvml(gpus=[rtx3090(failing=frozenset({"temperature", "memory"})), rtx4060ti()])

    first, second = inventory(backend).read().gpus

    assert first.temperature_c is None
    assert (first.vram_total_bytes, first.vram_free_bytes, first.vram_used_bytes) == (
        None,
        None,
        None,
    )
    assert first.name == "NVIDIA GeForce RTX 3090"
    assert first.power_w == 120.5
    assert first.compute_capability == "8.6"
    assert second.temperature_c == 50.0


def test_process_vram_lists_only_engine_pids() -> None:
    procs = [(4242, 3 * GIB), (999, GIB), (4243, None), (17, 200 * MIB)]
    backend = FakeNvml(gpus=[rtx3090(processes=procs), rtx4060ti(processes=[(999, GIB)])])

    first, second = inventory(backend, pids=lambda: [17, 4242, 4243]).read().gpus

    assert first.process_vram_bytes == ((17, 200 * MIB), (4242, 3 * GIB))
    assert second.process_vram_bytes == ()


def test_processes_are_not_read_when_not_asked_or_no_engine_runs() -> None:
    backend = FakeNvml(gpus=[rtx3090(processes=[(1, GIB)])])

    without = inventory(backend, pids=lambda: [1]).read(with_processes=False)
    no_engines = inventory(backend).read()

    assert without.gpus[0].process_vram_bytes == ()
    assert no_engines.gpus[0].process_vram_bytes == ()
    assert "processes" not in backend.calls


def test_failing_pid_provider_or_process_query_is_harmless() -> None:
    def broken() -> Sequence[int]:
        raise RuntimeError("supervisor gone")

    backend = FakeNvml(gpus=[rtx3090(processes=[(1, GIB)], failing=frozenset({"processes"}))])

    assert inventory(backend, pids=broken).read().gpus[0].process_vram_bytes == ()
    assert inventory(backend, pids=lambda: [1]).read().gpus[0].process_vram_bytes == ()


def test_close_shuts_nvml_down_once() -> None:
    backend = FakeNvml(gpus=[rtx3090()])
    reader = inventory(backend)
    reader.close()
    reader.read()
    reader.close()
    reader.close()

    assert backend.calls.count("shutdown") == 1


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "n/a"), (0, "0 MiB"), (512 * MIB, "512 MiB"), (24 * GIB, "24.0 GiB"), (GIB, "1.0 GiB")],
)
def test_format_bytes(value: int | None, text: str) -> None:
    assert format_bytes(value) == text


def test_format_inventory_table() -> None:
    backend = FakeNvml(
        gpus=[rtx3090(processes=[(4242, 3 * GIB)]), rtx4060ti(failing=frozenset({"temperature"}))]
    )
    text = format_inventory(inventory(backend, pids=lambda: [4242]).read())

    lines = text.splitlines()
    assert lines[0] == "NVIDIA driver 550.54.14"
    assert lines[1].split() == [
        *("GPU", "NAME", "VRAM", "USED", "VRAM", "TOTAL", "FREE", "UTIL", "TEMP", "POWER", "CC")
    ]
    assert "NVIDIA GeForce RTX 3090" in lines[2]
    assert "2.0 GiB" in lines[2]
    assert "24.0 GiB" in lines[2]
    assert "50 C" in lines[2]
    assert "8.6" in lines[2]
    assert "engine pid 4242: 3.0 GiB" in text
    row_4060 = next(line for line in lines if "4060" in line)
    assert "n/a" in row_4060
    assert "512 MiB" in row_4060
    assert lines[1].index("VRAM USED") == lines[2].index("2.0 GiB")


def test_format_empty_inventory_shows_the_hint() -> None:
    inv = GpuInventory(gpus=(), at=0.0, hint="No NVIDIA driver found (NVML: x).")
    assert format_inventory(inv) == "No GPU found. No NVIDIA driver found (NVML: x)."


def test_inventory_to_json_is_serialisable_with_nulls() -> None:
    backend = FakeNvml(gpus=[rtx3090(processes=[(7, GIB)], failing=frozenset({"power"}))])
    data = inventory_to_json(inventory(backend, pids=lambda: [7]).read())

    parsed = json.loads(json.dumps(data))
    assert parsed["driver_version"] == "550.54.14"
    assert parsed["hint"] is None
    gpu = parsed["gpus"][0]
    assert gpu["name"] == "NVIDIA GeForce RTX 3090"
    assert gpu["power_w"] is None
    assert gpu["vram_total_bytes"] == 24 * GIB
    assert gpu["compute_capability"] == "8.6"
    assert gpu["processes"] == [{"pid": 7, "vram_bytes": GIB}]
