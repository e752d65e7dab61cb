"""The "Tune…" dialog of a llama.cpp pool: GPU layers, flash attention, KV cache
types, tensor split and extra llama-server flags.

``tuning_values`` turns the dialog's text into config values (pure). The pools
view applies them through the app's settings controls, which validate them,
swap the engine by an atomic reload and save the config.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from typing import Any

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLineEdit,
    QSpinBox,
    QWidget,
)

KV_TYPES = ("f16", "f32", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
FLASH = ("auto", "on", "off")
Tuner = Callable[[QWidget, Mapping[str, Any]], dict[str, Any] | None]


def tuning_values(
    gpu_layers: int, flash_attn: str, cache_k: str, cache_v: str, *, split: str, extra: str
) -> dict[str, Any]:
    """Return the pool keys for the dialog's fields. Raises ValueError with one sentence."""
    try:
        shares = [float(part) for part in split.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"tensor split {split!r} must be numbers such as 3,1") from None
    try:
        args = shlex.split(extra)
    except ValueError as exc:
        raise ValueError(f"extra flags {extra!r} cannot be read: {exc}") from None
    return {
        "gpu_layers": gpu_layers,
        "flash_attn": flash_attn,
        "cache_type_k": cache_k,
        "cache_type_v": cache_v,
        "tensor_split": shares,
        "extra_args": args,
    }


class TuneDialog(QDialog):
    """Edits one pool's llama-server settings, starting from ``current``."""

    def __init__(self, parent: QWidget | None, pool_id: str, current: Mapping[str, Any]) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Tune pool {pool_id}")
        self.gpu_layers = QSpinBox()
        self.gpu_layers.setRange(-1, 100_000)
        self.gpu_layers.setSpecialValueText("all")
        self.gpu_layers.setValue(int(current.get("gpu_layers", -1)))
        self.flash = _combo(FLASH, str(current.get("flash_attn", "auto")))
        self.cache_k = _combo(KV_TYPES, str(current.get("cache_type_k", "f16")))
        self.cache_v = _combo(KV_TYPES, str(current.get("cache_type_v", "f16")))
        split = current.get("tensor_split") or []
        self.split = QLineEdit(",".join(f"{s:g}" for s in split))
        self.split.setPlaceholderText("e.g. 3,1 for two GPUs; empty: llama.cpp decides")
        self.extra = QLineEdit(shlex.join(current.get("extra_args") or []))
        self.extra.setPlaceholderText("more llama-server flags, e.g. --mlock")
        form = QFormLayout(self)
        form.addRow("GPU layers", self.gpu_layers)
        form.addRow("Flash attention", self.flash)
        form.addRow("KV cache K", self.cache_k)
        form.addRow("KV cache V", self.cache_v)
        form.addRow("Tensor split", self.split)
        form.addRow("Extra flags", self.extra)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def values(self) -> dict[str, Any]:
        """Return the edited keys. Raises ValueError for an unreadable field."""
        return tuning_values(
            self.gpu_layers.value(),
            self.flash.currentText(),
            self.cache_k.currentText(),
            self.cache_v.currentText(),
            split=self.split.text(),
            extra=self.extra.text(),
        )


def _combo(items: tuple[str, ...], current: str) -> QComboBox:
    box = QComboBox()
    box.addItems(list(items))
    box.setCurrentText(current)
    return box


def ask_tuning(parent: QWidget, current: Mapping[str, Any]) -> dict[str, Any] | None:
    """Show the dialog (blocking, modal); return the new keys, or None when cancelled.

    Raises ValueError when a field cannot be read.
    """
    dialog = TuneDialog(parent, str(current.get("id", "")), current)
    return dialog.values() if dialog.exec() == QDialog.DialogCode.Accepted else None
