"""Pools view: one card per GPU with the pools on it, plus a "CPU / remote" card.

Cards are rebuilt only when the set of GPUs or pools changes; otherwise their
labels are updated in place from ``poolsChanged`` and the 1 Hz ``sampled`` signal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.orchestrator.contracts import PoolView, ReloadResult
from app.orchestrator.device_mask import device_indices
from app.orchestrator.errors import OrchError
from app.orchestrator.lifecycle import PoolState
from app.orchestrator.ports import GpuInfo, GpuInventory
from app.ui.bridge import Bridge
from app.ui.icons import RED, badge_stylesheet, state_colour
from app.ui.pool_log_pane import FileOpener, PoolLogPane
from app.ui.pool_tuning import Tuner, ask_tuning

ModelChooser = Callable[[QWidget, PoolView], str | None]
"""Ask the user for a model for a pool; returns a GGUF path (llamacpp) or a model
name (other engines), or None when the user gave up."""

OTHER_TITLE = "CPU / remote"
_GIB = float(1 << 30)

_BADGES = {
    PoolState.STARTING: "starting",
    PoolState.READY: "ready",
    PoolState.DRAINING: "draining",
    PoolState.STOPPING: "stopping",
    PoolState.STOPPED: "stopped",
    PoolState.FAILED: "failed",
    PoolState.NEEDS_MODEL: "needs a model",
}
_SHOW_DETAIL = frozenset({PoolState.FAILED, PoolState.NEEDS_MODEL, PoolState.STARTING})
"""The states whose detail text the pool card shows."""


# ---------------------------------------------------------------- pure helpers


def group_pools(
    pools: Sequence[PoolView], gpus: Sequence[GpuInfo]
) -> tuple[list[tuple[GpuInfo, list[PoolView]]], list[PoolView]]:
    """Return ([(gpu, pools on it)], other pools) for the cards.

    A pool spanning several GPUs appears under each; a pool on "cpu", "remote",
    any other label or a GPU missing from the inventory goes to the other list.
    """
    known = {g.index for g in gpus}
    per_gpu = [(g, [p for p in pools if g.index in device_indices(p.device_mask)]) for g in gpus]
    others = [p for p in pools if not known.intersection(device_indices(p.device_mask))]
    return per_gpu, others


def badge_state(pool: PoolView) -> PoolState:
    """Return the state shown on a pool's badge (a ready pool being drained is "draining")."""
    if pool.draining and pool.state is PoolState.READY:
        return PoolState.DRAINING
    return pool.state


def badge_text(state: PoolState) -> str:
    """Return the human label of a badge state."""
    return _BADGES[state]


def pool_stats(pool: PoolView, tokens_per_s: float | None) -> str:
    """Return the one-line slots / queue / rate summary of a pool."""
    rate = "— tok/s" if tokens_per_s is None else f"{tokens_per_s:.1f} tok/s"
    return (
        f"slots {pool.slots_busy}/{pool.slots_total} · queue {pool.queue.interactive} "
        f"interactive / {pool.queue.batch} batch · {rate}"
    )


def gpu_readings(gpu: GpuInfo) -> str:
    """Return "util 37% · 54 °C · 180 W" with "—" for unreadable fields."""
    util = "—" if gpu.utilization_pct is None else f"{gpu.utilization_pct:.0f}%"
    temp = "—" if gpu.temperature_c is None else f"{gpu.temperature_c:.0f} °C"
    power = "" if gpu.power_w is None else f" · {gpu.power_w:.0f} W"
    return f"util {util} · {temp}{power}"


def model_ref_for(pool: PoolView, chosen: str) -> str:
    """Return the model_ref to reload ``pool`` with: a file URI for a GGUF path of a
    llamacpp pool, else ``chosen`` unchanged."""
    path = Path(chosen).expanduser()
    if pool.engine == "llamacpp" and path.is_absolute():
        return path.as_uri()
    return chosen


class TokenRates:
    """Tokens/s per pool from consecutive cumulative ``tokens_out`` samples."""

    def __init__(self) -> None:
        self._last: tuple[float, dict[str, int]] | None = None
        self.rates: dict[str, float] = {}

    def update(self, at: float, tokens_out: Mapping[str, int]) -> dict[str, float]:
        """Record a sample taken at ``at`` (seconds); return the rates since the last one.

        Returns {} for the first sample; a counter that went down reads as 0.
        """
        last, self._last = self._last, (at, dict(tokens_out))
        if last is None or at <= last[0]:
            return self.rates
        dt = at - last[0]
        self.rates = {pid: max(0, n - last[1].get(pid, n)) / dt for pid, n in tokens_out.items()}
        return self.rates

    def total(self) -> float:
        """Return the sum of the latest per-pool rates."""
        return sum(self.rates.values())


def default_model_chooser(parent: QWidget, pool: PoolView) -> str | None:
    """Ask for a GGUF file (llamacpp) or a model name (other engines). Blocks in a
    modal dialog; returns None when cancelled."""
    if pool.engine == "llamacpp":
        path, _ = QFileDialog.getOpenFileName(
            parent, f"Model for pool {pool.pool_id}", str(Path.home()), "GGUF models (*.gguf)"
        )
        return path or None
    name, ok = QInputDialog.getText(parent, f"Model for pool {pool.pool_id}", "Model name:")
    return name.strip() if ok and name.strip() else None


# ---------------------------------------------------------------- widgets


class PoolCard(QFrame):
    """One pool: badges, model, slots, queues, rate, detail and actions."""

    def __init__(self, pool: PoolView, view: PoolsView) -> None:
        super().__init__()
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.pool_id = pool.pool_id
        self._view = view
        self.title = QLabel(f"<b>{pool.pool_id}</b>")
        self.badge = QLabel()
        self.demo_badge = QLabel("demo model")
        self.demo_badge.setStyleSheet(badge_stylesheet(state_colour("demo")))
        self.model = QLabel()
        self.stats = QLabel()
        self.detail = QLabel()
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._build_buttons()
        self._layout()
        self.update_view(pool, None)

    def _build_buttons(self) -> None:
        self.drain_button = QPushButton("Drain")
        self.reload_button = QPushButton("Reload…")
        self.restart_button = QPushButton("Restart")
        self.set_model_button = QPushButton("Set model…")
        self.tune_button = QPushButton("Tune…")
        self.tune_button.clicked.connect(lambda: self._view.tune(self.pool_id))
        self.tune_button.setAccessibleName(f"Tune the llama-server settings of pool {self.pool_id}")
        self.log_button = QPushButton("Log")
        self.log_button.clicked.connect(lambda: self._view.log_pane.show_pool(self.pool_id))
        self.log_button.setAccessibleName(f"Show the engine log of pool {self.pool_id}")
        self.drain_button.clicked.connect(lambda: self._view.toggle_drain(self.pool_id))
        self.reload_button.clicked.connect(lambda: self._view.choose_and_reload(self.pool_id))
        self.set_model_button.clicked.connect(lambda: self._view.choose_and_reload(self.pool_id))
        self.restart_button.clicked.connect(lambda: self._view.restart(self.pool_id))
        pid = self.pool_id
        self.drain_button.setAccessibleName(f"Drain or resume pool {pid}")
        self.reload_button.setAccessibleName(f"Reload pool {pid} with another model")
        self.restart_button.setAccessibleName(f"Restart pool {pid}")
        self.set_model_button.setAccessibleName(f"Set the model of pool {pid}")

    def _layout(self) -> None:
        head = QHBoxLayout()
        for w in (self.title, self.badge, self.demo_badge):
            head.addWidget(w)
        head.addStretch(1)
        buttons = QHBoxLayout()
        for b in (self.drain_button, self.reload_button, self.set_model_button):
            buttons.addWidget(b)
        buttons.addWidget(self.restart_button)
        buttons.addWidget(self.tune_button)
        buttons.addWidget(self.log_button)
        buttons.addStretch(1)
        box = QVBoxLayout(self)
        box.addLayout(head)
        for w in (self.model, self.stats, self.detail):
            box.addWidget(w)
        box.addLayout(buttons)

    def update_view(self, pool: PoolView, tokens_per_s: float | None) -> None:
        """Show ``pool`` (labels updated in place)."""
        state = badge_state(pool)
        self.badge.setText(badge_text(state))
        self.badge.setStyleSheet(badge_stylesheet(state_colour(state)))
        self.badge.setAccessibleName(f"pool {pool.pool_id} state: {badge_text(state)}")
        self.demo_badge.setVisible(pool.demo)
        model = pool.model or "(no model)"
        self.model.setText(f"model: {model} · {pool.engine} {pool.engine_version} · ctx {pool.ctx}")
        self.stats.setText(pool_stats(pool, tokens_per_s))
        show_detail = bool(pool.detail) and pool.state in _SHOW_DETAIL
        self.detail.setText(pool.detail if show_detail else "")
        failed = pool.state is PoolState.FAILED
        self.detail.setStyleSheet(f"color: {RED};" if failed else "")
        self.detail.setVisible(show_detail)
        wants_model = pool.state is PoolState.NEEDS_MODEL or pool.demo
        self.set_model_button.setVisible(wants_model)  # the banner points here on demo
        self.reload_button.setVisible(not wants_model)
        self.drain_button.setText("Resume" if pool.draining else "Drain")


class GpuCard(QGroupBox):
    """One GPU (or the "CPU / remote" group when ``gpu`` is None) and its pools."""

    def __init__(self, gpu: GpuInfo | None) -> None:
        super().__init__()
        self.vram = QProgressBar()
        self.vram.setTextVisible(True)
        self.readings = QLabel()
        self.box = QVBoxLayout(self)
        if gpu is None:
            self.setTitle(OTHER_TITLE)
        else:
            self.box.addWidget(self.vram)
            self.box.addWidget(self.readings)
            self.update_gpu(gpu)

    def update_gpu(self, gpu: GpuInfo) -> None:
        """Show the GPU's name, VRAM used/total and readings."""
        self.setTitle(f"GPU {gpu.index}: {gpu.name or 'unknown GPU'}")
        total, used = gpu.vram_total_bytes, gpu.vram_used_bytes
        if total and used is not None:
            self.vram.setRange(0, int(total / (1 << 20)))
            self.vram.setValue(int(used / (1 << 20)))
            self.vram.setFormat(f"VRAM {used / _GIB:.1f} / {total / _GIB:.1f} GiB")
        else:
            self.vram.setRange(0, 1)
            self.vram.setValue(0)
            self.vram.setFormat("VRAM unknown")
        self.vram.setAccessibleName(f"GPU {gpu.index} VRAM: {self.vram.format()}")
        self.readings.setText(gpu_readings(gpu))


AskYesNo = Callable[[QWidget, str, str], bool]
"""Ask a yes/no question (parent, title, text); True for yes. Blocks (modal)."""


def ask_yes_no(parent: QWidget, title: str, text: str) -> bool:
    """Ask with a modal QMessageBox; True for Yes."""
    buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
    answer = QMessageBox.question(parent, title, text, buttons, QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


class PoolsView(QWidget):
    """The Pools tab. ``choose_model`` is injectable so tests need no dialog.

    While no pool serves a real model, a "Get a model" button leads to the Models
    view (``getModel``)."""

    getModel = Signal()

    def __init__(
        self,
        bridge: Bridge,
        parent: QWidget | None = None,
        *,
        choose_model: ModelChooser | None = None,
        ask: AskYesNo | None = None,
        open_file: FileOpener | None = None,
        tuner: Tuner | None = None,
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._tuner = tuner or ask_tuning
        self.log_pane = PoolLogPane(bridge, opener=open_file)
        self._choose = choose_model or default_model_chooser
        self._ask = ask or ask_yes_no
        self.rates = TokenRates()
        """Tokens/s per pool, updated once per sample (the tray reads them too)."""
        self._pools: dict[str, PoolView] = {}
        self._inventory: GpuInventory = bridge.gpu()
        self._key: tuple[Any, ...] | None = None
        self.gpu_cards: dict[int, GpuCard] = {}
        self.other_card: GpuCard | None = None
        self.pool_cards: dict[str, list[PoolCard]] = {}
        self._build()
        bridge.poolsChanged.connect(self._on_pools)
        bridge.gpuChanged.connect(self._on_gpu)
        bridge.sampled.connect(self._on_sample)
        self.set_state(bridge.pools(), self._inventory)

    def _build(self) -> None:
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        self.hint.setVisible(False)
        self.result = QLabel()
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.result.setAccessibleName("Result of the last pool action")
        self._cards = QWidget()
        self._cards_box = QVBoxLayout(self._cards)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self._cards)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(scroll)
        split.addWidget(self.log_pane)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setSizes([600, 200])  # the cards first; the log below, resizable
        box = QVBoxLayout(self)
        box.addWidget(self.hint)
        box.addWidget(self.result)
        box.addWidget(split, 1)

    # ---- state in ----------------------------------------------------------

    def set_state(self, pools: Sequence[PoolView], inventory: GpuInventory) -> None:
        """Show ``pools`` on ``inventory``; rebuild the cards only when the set changes."""
        self._pools = {p.pool_id: p for p in pools}
        self._inventory = inventory
        self.log_pane.set_pools(sorted(self._pools))
        key = (
            tuple(g.index for g in inventory.gpus),
            tuple((p.pool_id, p.device_mask) for p in pools),
        )
        if key != self._key:
            self._key = key
            self._rebuild()
        else:
            self._refresh()
        self._show_hint(inventory)

    def _on_pools(self, changed: Sequence[PoolView]) -> None:
        pools = dict(self._pools)
        pools.update((p.pool_id, p) for p in changed)
        self.set_state(sorted(pools.values(), key=lambda p: p.pool_id), self._inventory)

    def _on_gpu(self, inventory: GpuInventory) -> None:
        self.set_state(list(self._pools.values()), inventory)

    def _on_sample(self, sample: Any) -> None:
        self.rates.update(sample.at, sample.tokens_out)
        self.set_state(sample.pools, sample.gpu)

    def _show_hint(self, inventory: GpuInventory) -> None:
        text = inventory.hint or ""
        if not inventory.gpus and not text:
            text = "No NVIDIA GPU found; only CPU, mock and remote pools can run."
        if not inventory.gpus:
            text = f"<b>No GPU:</b> {text}"
        self.hint.setText(text)
        self.hint.setVisible(bool(text))

    # ---- cards ---------------------------------------------------------------

    def _rebuild(self) -> None:
        while (item := self._cards_box.takeAt(0)) is not None:
            widget = item.widget()
            if widget is not None:
                widget.deleteLater()
        self.gpu_cards, self.other_card, self.pool_cards = {}, None, {}
        self.get_model_button: QPushButton | None = None
        if not any(p.state is PoolState.READY and not p.demo for p in self._pools.values()):
            self.get_model_button = QPushButton("Get a model…")
            self.get_model_button.setToolTip("Search Hugging Face and download a GGUF model")
            self.get_model_button.clicked.connect(self.getModel)
            self._cards_box.addWidget(self.get_model_button, 0, Qt.AlignmentFlag.AlignLeft)
        per_gpu, others = group_pools(list(self._pools.values()), self._inventory.gpus)
        for gpu, pools in per_gpu:
            card = GpuCard(gpu)
            self.gpu_cards[gpu.index] = card
            self._add_pools(card, pools)
        if others:
            self.other_card = GpuCard(None)
            self._add_pools(self.other_card, others)
        self._cards_box.addStretch(1)

    def _add_pools(self, card: GpuCard, pools: Sequence[PoolView]) -> None:
        if not pools:
            empty = QLabel("No pool on this GPU.")
            empty.setEnabled(False)
            card.box.addWidget(empty)
        for pool in pools:
            pool_card = PoolCard(pool, self)
            pool_card.update_view(pool, self.rates.rates.get(pool.pool_id))
            self.pool_cards.setdefault(pool.pool_id, []).append(pool_card)
            card.box.addWidget(pool_card)
        card.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self._cards_box.addWidget(card)

    def _refresh(self) -> None:
        for gpu in self._inventory.gpus:
            card = self.gpu_cards.get(gpu.index)
            if card is not None:
                card.update_gpu(gpu)
        for pid, cards in self.pool_cards.items():
            pool = self._pools.get(pid)
            if pool is None:
                continue
            for pool_card in cards:
                pool_card.update_view(pool, self.rates.rates.get(pid))

    # ---- actions ---------------------------------------------------------------

    def toggle_drain(self, pool_id: str) -> None:
        """Drain a serving pool or resume a draining one. Never blocks."""
        pool = self._pools.get(pool_id)
        if pool is not None and pool.draining:
            command, done = self._bridge.resume(pool_id), f"Pool {pool_id} admits tasks again."
        else:
            command = self._bridge.drain(pool_id)
            done = f"Pool {pool_id} is draining: no new tasks start on it."
        self._bridge.run(self._command(pool_id, command, done), f"changing pool {pool_id}")

    async def _command(self, pool_id: str, command: Awaitable[None], done: str) -> None:
        try:
            await command
            self.result.setText(done)
        except OrchError as exc:
            self.result.setText(f"Could not change pool {pool_id}: {exc.message}")

    def choose_and_reload(self, pool_id: str) -> None:
        """Ask for a model (blocks in a modal dialog) and reload the pool with it."""
        pool = self._pools.get(pool_id)
        if pool is None:
            return
        chosen = self._choose(self, pool)
        if not chosen:
            return
        ref = model_ref_for(pool, chosen)
        self.result.setText(f"Loading {Path(chosen).name} on pool {pool_id}…")
        self._bridge.run(self._reload(pool_id, ref), f"reload of pool {pool_id}")

    async def _reload(self, pool_id: str, model_ref: str) -> None:
        try:
            res: ReloadResult = await self._bridge.reload(pool_id, model_ref)
        except OrchError as exc:
            self.result.setText(f"Reload of pool {pool_id} refused: {exc.message}")
            return
        if res.ok:  # the engine's message often says the same: say it once
            said = res.model in res.message
            self.result.setText(res.message if said else f"Pool {pool_id} now serves {res.model}.")
        else:
            self.result.setText(f"Reload of pool {pool_id} failed: {res.message}")

    def tune(self, pool_id: str) -> None:
        """Ask for new llama-server settings (modal) and apply them: an atomic reload of
        the pool, then the config is saved. Never blocks beyond the dialog."""
        settings = self._bridge.controls.current_settings()
        pool = next((p for p in getattr(settings, "pools", []) if p.id == pool_id), None)
        if pool is None or pool.engine != "llamacpp":
            self.result.setText(f"Pool {pool_id} does not run llama-server; nothing to tune.")
            return
        try:
            values = self._tuner(self, pool.model_dump())
        except ValueError as exc:
            self.result.setText(f"Pool {pool_id} not changed: {exc}")
            return
        if values is None:
            return
        pools = [p.model_copy(update=values) if p.id == pool_id else p for p in settings.pools]
        self.result.setText(f"Restarting pool {pool_id} with the new settings beside the old…")
        new = settings.model_copy(update={"pools": pools})
        self._bridge.run(self._apply_tuning(pool_id, new), f"tuning pool {pool_id}")

    async def _apply_tuning(self, pool_id: str, settings: Any) -> None:
        try:
            await self._bridge.controls.apply_settings(settings)
        except ValueError as exc:
            self.result.setText(f"Pool {pool_id} not changed: {exc}")
            return
        self.result.setText(f"Pool {pool_id} runs with the new settings; saved to the config.")

    def restart(self, pool_id: str) -> None:
        """Ask first (modal), then restart the pool's engine in the background."""
        question = (
            f"Restart pool {pool_id}? Its running answers stop and the model loads again, "
            "which can take a while."
        )
        if not self._ask(self, "Restart the pool?", question):
            return
        self.result.setText(f"Restarting pool {pool_id}…")
        self._bridge.run(self._restart(pool_id), f"restart of pool {pool_id}")

    async def _restart(self, pool_id: str) -> None:
        await self._bridge.restart(pool_id)
        pool = self._pools.get(pool_id)
        if pool is not None and pool.ready:
            self.result.setText(f"Pool {pool_id} is serving again.")
        else:
            self.result.setText(
                f"Pool {pool_id} is starting again; its badge turns ready when it serves."
            )
