"""The one parser of a pool's device mask (the CUDA_VISIBLE_DEVICES syntax). Pure."""

from __future__ import annotations


def device_indices(mask: str) -> tuple[int, ...]:
    """Return the GPU indices a device mask names, in order ("0, 1" -> (0, 1)).

    Labels that name no GPU ("cpu", "remote", "mock") give (); parts that are
    not whole numbers are skipped. Never raises.
    """
    return tuple(int(part) for raw in mask.split(",") if (part := raw.strip()).isdigit())
