"""Adapters that implement the core's ports: engines, NVML, demo model."""
