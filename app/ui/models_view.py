"""The Models view: local models (quantization, size, ctx, VRAM fit, users), Hugging
Face search, downloads with progress (bytes, rate, ETA, cancel), verify, retire,
delete, and "Use on pool…" (which writes the choice to the config).

Reaches the catalog only through ``bridge.models`` (a ``ModelsClient``).
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.orchestrator.catalog_port import CatalogModel, Download, SearchResult
from app.ui.bridge import Bridge

POLL_MS = 500
MODEL_COLUMNS = ("Name", "Quantization", "Size", "Trained ctx", "Fit", "Used by", "State")
ChoosePool = Callable[[QWidget, list[str]], str | None]
"""Ask which of the given pools (or GPUs) to use; None when canceled."""
Ask = Callable[[QWidget, str], bool]


def mib(n: int | None) -> str:
    """Return bytes as "12.3 MiB" (KiB under 1 MiB, GiB past 1 GiB); "?" when unknown."""
    if n is None:
        return "?"
    if n < 2**20:
        return f"{n / 2**10:.0f} KiB"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def progress_text(d: Download) -> str:
    """Return "12.3 MiB of 600.0 MiB · 4.5 MiB/s · ETA 10 s" for a download."""
    rate = f"{mib(int(d.rate_bytes_per_s))}/s" if d.rate_bytes_per_s else "… /s"
    eta = f"ETA {d.eta_s:.0f} s" if d.eta_s is not None else "ETA …"
    if d.state != "running":
        return d.error or d.state
    return f"{mib(d.bytes_done)} of {mib(d.bytes_total)} · {rate} · {eta}"


def choose_pool_dialog(parent: QWidget, pools: list[str]) -> str | None:
    """Ask which pool to use (modal). Returns the pool id, None when canceled."""
    pool, ok = QInputDialog.getItem(parent, "Use on pool", "Pool:", pools, 0, False)
    return pool if ok else None


def ask_dialog(parent: QWidget, question: str) -> bool:
    """Ask a yes/no question (modal)."""
    from PySide6.QtWidgets import QMessageBox

    answer = QMessageBox.question(parent, "llama-orch", question)
    return answer == QMessageBox.StandardButton.Yes


class DownloadRow(QWidget):
    """One download: its ref, a progress bar, bytes/rate/ETA and Cancel."""

    def __init__(self, download: Download, on_cancel: Callable[[str], None]) -> None:
        super().__init__()
        self.download_id = download.id
        self.state = download.state
        self.title = QLabel(download.ref)
        self.bar = QProgressBar()
        self.bar.setAccessibleName(f"Progress of {download.ref}")
        self.info = QLabel()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(lambda: on_cancel(self.download_id))
        box = QHBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.title, 2)
        box.addWidget(self.bar, 3)
        box.addWidget(self.info, 2)
        box.addWidget(self.cancel_button)
        self.show_progress(download)

    def show_progress(self, d: Download) -> None:
        """Show ``d``'s progress; hides Cancel once it ended."""
        self.bar.setRange(0, 1000)
        total = d.bytes_total or 0
        self.bar.setValue(int(1000 * d.bytes_done / total) if total else 0)
        self.info.setText(progress_text(d))
        self.state = d.state
        self.cancel_button.setVisible(d.state == "running")


class ModelsView(QWidget):
    """Local models, hub search and downloads."""

    def __init__(
        self,
        bridge: Bridge,
        *,
        choose_pool: ChoosePool = choose_pool_dialog,
        ask: Ask = ask_dialog,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._choose_pool = choose_pool
        self._ask = ask
        self.models: list[CatalogModel] = []
        self.rows: dict[str, DownloadRow] = {}
        self._build()
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        if bridge.models is None:
            self.status.setText("This backend has no model catalog.")
            self.setEnabled(False)

    # ---- construction ----

    def _build(self) -> None:
        self.query = QLineEdit()
        self.query.setPlaceholderText("Search Hugging Face for GGUF models, e.g. qwen 0.5b")
        self.query.returnPressed.connect(self.search)
        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(self.search)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.results = QTreeWidget()
        self.results.setHeaderLabels(("Repository / file", "Quantization", "Size"))
        self.results.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.results.itemDoubleClicked.connect(lambda *_: self.download_selected())
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self.download_selected)
        self.downloads_box = QVBoxLayout()
        self.table = QTableWidget(0, len(MODEL_COLUMNS))
        self.table.setHorizontalHeaderLabels(MODEL_COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.buttons = {
            name: QPushButton(name)
            for name in ("Use on pool…", "New pool on GPU…", "Verify", "Retire", "Delete")
        }
        self.buttons["Use on pool…"].clicked.connect(self.use_selected)
        self.buttons["New pool on GPU…"].clicked.connect(self.new_pool_for_selected)
        self.buttons["Verify"].clicked.connect(lambda: self._act("verify"))
        self.buttons["Retire"].clicked.connect(lambda: self._act("state"))
        self.buttons["Delete"].clicked.connect(lambda: self._act("delete"))
        self._layout()

    def _layout(self) -> None:
        search_row = QHBoxLayout()
        search_row.addWidget(self.query, 1)
        search_row.addWidget(self.search_button)
        get = QGroupBox("Get a model")
        get_box = QVBoxLayout(get)
        get_box.addLayout(search_row)
        get_box.addWidget(self.status)
        get_box.addWidget(self.results, 1)
        get_box.addWidget(self.download_button, 0, Qt.AlignmentFlag.AlignRight)
        get_box.addLayout(self.downloads_box)
        local = QGroupBox("Models on this machine")
        local_box = QVBoxLayout(local)
        local_box.addWidget(self.table, 1)
        actions = QHBoxLayout()
        actions.addStretch(1)
        for button in self.buttons.values():
            actions.addWidget(button)
        local_box.addLayout(actions)
        box = QVBoxLayout(self)
        box.addWidget(get, 1)
        box.addWidget(local, 1)

    # ---- local models ----

    def refresh(self) -> None:
        """Reload the local models table (in the background)."""
        if self._bridge.models is not None:
            self._bridge.run(self._refresh(), "listing the models")

    async def _refresh(self) -> None:
        assert self._bridge.models is not None
        self.show_models(await self._bridge.models.list_models())

    def show_models(self, models: list[CatalogModel]) -> None:
        """Fill the table with ``models``."""
        self.models = models
        self.table.setRowCount(len(models))
        for row, m in enumerate(models):
            ctx = m.gguf.get("context_length")
            cells = (m.id, str(m.gguf.get("quantization", "?")), mib(m.size_bytes),
                     str(ctx or "?"), "; ".join(m.fits) or "no GPU found",
                     ", ".join(m.used_by) or "—", m.state)  # fmt: skip
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(m.source_url if col == 0 else text)
                self.table.setItem(row, col, item)

    def selected_model(self) -> CatalogModel | None:
        """Return the model of the selected row, None when none is selected."""
        rows = self.table.selectionModel().selectedRows()
        return self.models[rows[0].row()] if rows else None

    def use_selected(self) -> None:
        """Ask for a pool and reload it with the selected model (written to the config)."""
        model = self.selected_model()
        pools = [p.pool_id for p in self._bridge.pools() if p.engine == "llamacpp"]
        if model is None or not pools:
            self.status.setText("Select a model, and have a llama.cpp pool to use it on.")
            return
        pool = self._choose_pool(self, pools)
        if pool is not None:
            self._bridge.run(self._use(pool, model.source_url), f"loading {model.id} on {pool}")

    async def _use(self, pool: str, ref: str) -> None:
        assert self._bridge.models is not None
        self.status.setText(f"Loading {ref} on pool {pool}…")
        result = await self._bridge.models.use_on_pool(pool, ref)
        self.status.setText(result.message)
        await self._refresh()

    def new_pool_for_selected(self) -> None:
        """Ask for a GPU and add a pool serving the selected model there (config file)."""
        model = self.selected_model()
        gpus = [f"GPU {g.index}" for g in self._bridge.gpu().gpus]
        if model is None or not gpus:
            self.status.setText("Select a model; a new pool needs a GPU that NVML found.")
            return
        choice = self._choose_pool(self, gpus)
        if choice is not None:
            index = int(choice.removeprefix("GPU "))
            self._bridge.run(self._new_pool(index, model.id), f"adding a pool for {model.id}")

    async def _new_pool(self, gpu_index: int, model_id: str) -> None:
        assert self._bridge.models is not None
        self.status.setText(await self._bridge.models.new_pool(gpu_index, model_id))

    def _act(self, what: str) -> None:
        model = self.selected_model()
        if model is None:
            self.status.setText("Select a model first.")
            return
        if what == "delete" and not self._ask(self, f"Delete {model.id}?"):
            return
        self._bridge.run(self._apply(what, model), f"{what} of {model.id}")

    async def _apply(self, what: str, model: CatalogModel) -> None:
        client = self._bridge.models
        assert client is not None
        if what == "verify":
            await client.verify(model.id)
            self.status.setText(f"{model.id}: digest and GGUF checks passed.")
        elif what == "state":
            new = "Active" if model.state == "Retired" else "Retired"
            await client.set_state(model.id, new)
        else:
            await client.delete(model.id)
        await self._refresh()

    # ---- search and downloads ----

    def search(self) -> None:
        """Search the hub for the query (in the background)."""
        if self._bridge.models is not None:
            self._bridge.run(self._search(self.query.text()), "searching the hub")

    async def _search(self, query: str) -> None:
        assert self._bridge.models is not None
        self.status.setText(f"Searching for “{query}”…")
        self.show_results(await self._bridge.models.search(query))

    def show_results(self, result: SearchResult) -> None:
        """Show the hits (repos with their GGUF files) or the hub's error."""
        self.results.clear()
        self.status.setText(result.error or f"{len(result.hits)} repositories found.")
        for hit in result.hits:
            repo = QTreeWidgetItem([hit.repo, "", f"{hit.downloads or 0} downloads"])
            for f in hit.files:
                child = QTreeWidgetItem([f.file, f.quantization, mib(f.size_bytes)])
                child.setData(0, Qt.ItemDataRole.UserRole, f.ref)
                repo.addChild(child)
            self.results.addTopLevelItem(repo)
            repo.setExpanded(True)

    def download_selected(self) -> None:
        """Start downloading the selected file."""
        item = self.results.currentItem()
        ref = item.data(0, Qt.ItemDataRole.UserRole) if item is not None else None
        if not ref:
            self.status.setText("Select a .gguf file of a repository to download.")
            return
        self._bridge.run(self._get(str(ref)), f"download of {ref}")

    async def _get(self, ref: str) -> None:
        assert self._bridge.models is not None
        started = await self._bridge.models.get(ref)
        if started.download is not None:
            self.show_download(started.download)
            self.timer.start()
        else:
            self.status.setText(f"{ref} is already on this machine.")

    def show_download(self, d: Download) -> None:
        """Add or update the row of download ``d``."""
        row = self.rows.get(d.id)
        if row is None:
            row = self.rows[d.id] = DownloadRow(d, self.cancel)
            self.downloads_box.addWidget(row)
        row.show_progress(d)

    def cancel(self, download_id: str) -> None:
        """Cancel a download (no partial file stays)."""
        assert self._bridge.models is not None
        self._bridge.run(self._bridge.models.cancel(download_id), "canceling the download")

    def poll(self) -> None:
        """Update the progress rows (timer, every POLL_MS while downloads run)."""
        if self._bridge.models is not None:
            self._bridge.run(self._poll(), "reading download progress")

    async def _poll(self) -> None:
        assert self._bridge.models is not None
        ended = False
        for d in await self._bridge.models.downloads():
            was = self.rows.get(d.id)
            if was is not None and d.state != "running" and was.state == "running":
                ended = True
            if d.id in self.rows:
                self.show_download(d)
        if not any(r.state == "running" for r in self.rows.values()):
            self.timer.stop()
        if ended:
            await self._refresh()
