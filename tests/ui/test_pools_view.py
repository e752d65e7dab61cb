"""Pools view: cards per GPU, state badges, actions, in-place updates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QWidget

from app.config import parse_settings
from app.orchestrator.contracts import PoolView, QueueDepth, ReloadResult
from app.orchestrator.ports import GpuInventory
from app.ui.bridge import CoreSample
from app.ui.pool_tuning import tuning_values
from app.ui.pools_view import (
    OTHER_TITLE,
    PoolsView,
    TokenRates,
    badge_state,
    group_pools,
    model_ref_for,
)
from tests.ui.conftest import QtAsync
from tests.ui.fakes import FakeBridge, FakeControls, gpu, pool_view


def sample(bridge: FakeBridge, at: float, tokens: dict[str, int]) -> CoreSample:
    return CoreSample(
        at=at,
        pools=bridge.pools(),
        gpu=bridge.gpu(),
        counters={"started": 0, "rejected": 0, "canceled": 0, "enqueued": 0},
        tokens_out=tokens,
        ttfts=[],
    )


def make_view(qtbot: Any, bridge: FakeBridge, chooser: Any = None, ask: Any = None) -> PoolsView:
    view = PoolsView(bridge, choose_model=chooser, ask=ask or (lambda *_: True))
    qtbot.addWidget(view)
    return view


# ---------------------------------------------------------------- pure helpers


def test_group_pools_puts_each_pool_under_its_gpus_and_the_rest_aside() -> None:
    pools = [
        pool_view("a", device_mask="0"),
        pool_view("b", device_mask="0,1"),
        pool_view("c", device_mask="cpu"),
        pool_view("d", device_mask="remote"),
        pool_view("e", device_mask="7"),
    ]
    per_gpu, others = group_pools(pools, (gpu(0), gpu(1)))
    assert [(g.index, [p.pool_id for p in ps]) for g, ps in per_gpu] == [
        (0, ["a", "b"]),
        (1, ["b"]),
    ]
    assert [p.pool_id for p in others] == ["c", "d", "e"]


def test_badge_state_reads_draining_for_a_drained_ready_pool() -> None:
    assert badge_state(pool_view(state="ready", draining=True)) == "draining"
    assert badge_state(pool_view(state="failed", draining=True)) == "failed"
    assert badge_state(pool_view(state="needs_model")) == "needs_model"


def test_token_rates_are_deltas_over_time() -> None:
    rates = TokenRates()
    assert rates.update(10.0, {"a": 100, "b": 0}) == {}
    assert rates.update(12.0, {"a": 300, "b": 50}) == {"a": 100.0, "b": 25.0}
    assert rates.total() == 125.0
    assert rates.update(13.0, {"a": 200, "b": 50}) == {"a": 0.0, "b": 0.0}


def test_model_ref_is_a_file_uri_for_llamacpp_and_a_name_otherwise() -> None:
    llama = pool_view(engine="llamacpp")
    assert model_ref_for(llama, "/models/my model.gguf") == "file:///models/my%20model.gguf"
    assert model_ref_for(pool_view(engine="openai"), "qwen2.5-7b") == "qwen2.5-7b"


# ---------------------------------------------------------------- rendering


def test_a_card_per_gpu_with_its_pools_and_a_cpu_remote_card(qtbot: Any) -> None:
    bridge = FakeBridge()
    bridge.inventory = GpuInventory(gpus=(gpu(0), gpu(1, "RTX 4090")), at=0.0)
    bridge.pool_list = [pool_view("gpu0", device_mask="0"), pool_view("cpu0", device_mask="cpu")]
    view = make_view(qtbot, bridge)
    assert sorted(view.gpu_cards) == [0, 1]
    assert view.gpu_cards[1].title() == "GPU 1: RTX 4090"
    assert "VRAM 4.0 / 24.0 GiB" in view.gpu_cards[0].vram.format()
    assert "54 °C" in view.gpu_cards[0].readings.text()
    assert view.other_card is not None and view.other_card.title() == OTHER_TITLE
    assert view.pool_cards["cpu0"][0].parent() is view.other_card
    assert view.pool_cards["gpu0"][0].parent() is view.gpu_cards[0]


def test_ready_to_failed_shows_the_failed_badge_and_detail_in_place(qtbot: Any) -> None:
    bridge = FakeBridge()
    view = make_view(qtbot, bridge)
    card = view.pool_cards["gpu0"][0]
    assert card.badge.text() == "ready"
    assert card.detail.isHidden()
    bridge.poolsChanged.emit(
        (pool_view("gpu0", state="failed", detail="engine exited with code 1"),)
    )
    assert view.pool_cards["gpu0"][0] is card  # updated in place, not rebuilt
    assert card.badge.text() == "failed"
    assert "#c0392b" in card.badge.styleSheet()
    assert card.detail.text() == "engine exited with code 1"
    assert not card.detail.isHidden()


def test_needs_model_offers_set_model_and_demo_is_labelled(qtbot: Any) -> None:
    bridge = FakeBridge()
    bridge.pool_list = [
        pool_view("gpu0", state="needs_model", model="", detail="no model configured"),
        pool_view("demo", demo=True, device_mask="cpu"),
    ]
    view = make_view(qtbot, bridge)
    empty = view.pool_cards["gpu0"][0]
    assert empty.badge.text() == "needs a model"
    assert not empty.set_model_button.isHidden()
    assert empty.reload_button.isHidden()
    assert empty.demo_badge.isHidden()
    demo = view.pool_cards["demo"][0]
    assert not demo.demo_badge.isHidden()
    assert demo.demo_badge.text() == "demo model"
    assert not demo.set_model_button.isHidden()  # the first-start banner points here
    assert demo.reload_button.isHidden()


def test_slots_queues_and_tokens_per_second_from_samples(qtbot: Any) -> None:
    bridge = FakeBridge()
    bridge.pool_list = [pool_view(slots_busy=1, queue=QueueDepth(interactive=3, batch=2))]
    view = make_view(qtbot, bridge)
    bridge.sampled.emit(sample(bridge, 1.0, {"gpu0": 100}))
    bridge.sampled.emit(sample(bridge, 3.0, {"gpu0": 190}))
    stats = view.pool_cards["gpu0"][0].stats.text()
    assert "slots 1/2" in stats
    assert "queue 3 interactive / 2 batch" in stats
    assert "45.0 tok/s" in stats


def test_cards_are_rebuilt_only_when_the_set_of_pools_changes(qtbot: Any) -> None:
    bridge = FakeBridge()
    view = make_view(qtbot, bridge)
    first = view.pool_cards["gpu0"][0]
    bridge.sampled.emit(sample(bridge, 1.0, {"gpu0": 1}))
    assert view.pool_cards["gpu0"][0] is first
    bridge.pool_list = [pool_view("gpu0"), pool_view("gpu0b")]
    bridge.sampled.emit(sample(bridge, 2.0, {"gpu0": 1, "gpu0b": 0}))
    assert set(view.pool_cards) == {"gpu0", "gpu0b"}
    assert view.pool_cards["gpu0"][0] is not first


def test_no_gpu_shows_the_inventory_hint(qtbot: Any) -> None:
    bridge = FakeBridge()
    hint = "NVML not found: install the NVIDIA driver (libnvidia-ml.so.1)"
    bridge.inventory = GpuInventory(gpus=(), at=0.0, hint=hint)
    bridge.pool_list = [pool_view("cpu0", device_mask="cpu")]
    view = make_view(qtbot, bridge)
    assert not view.hint.isHidden()
    assert hint in view.hint.text()
    assert view.gpu_cards == {}
    assert view.other_card is not None


# ---------------------------------------------------------------- actions


def test_drain_then_resume_send_commands(qtbot: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    view = make_view(qtbot, bridge)
    card = view.pool_cards["gpu0"][0]
    assert card.drain_button.text() == "Drain"
    card.drain_button.click()
    assert bridge.commands == [("drain", "gpu0")]
    bridge.poolsChanged.emit((pool_view("gpu0", draining=True),))
    assert card.drain_button.text() == "Resume"
    assert card.badge.text() == "draining"
    card.drain_button.click()
    assert bridge.commands[-1] == ("resume", "gpu0")


def test_reload_with_a_chosen_file_sends_reload_and_shows_the_result(
    qtbot: Any, qloop: QtAsync
) -> None:
    bridge = FakeBridge()
    asked: list[str] = []

    def chooser(_parent: QWidget, pool: PoolView) -> str:
        asked.append(pool.pool_id)
        return "/models/qwen2.5-7b-q4.gguf"

    view = make_view(qtbot, bridge, chooser)
    view.pool_cards["gpu0"][0].reload_button.click()
    qloop.wait_until(lambda: "now serves" in view.result.text())
    assert asked == ["gpu0"]
    assert bridge.commands == [("reload", ("gpu0", "file:///models/qwen2.5-7b-q4.gguf"))]
    assert "file:///models/qwen2.5-7b-q4.gguf" in view.result.text()


def test_failed_reload_is_reported_and_a_cancelled_chooser_sends_nothing(
    qtbot: Any, qloop: QtAsync
) -> None:
    class Refusing(FakeBridge):
        async def reload(self, pool_id: str, model_ref: str) -> ReloadResult:
            self.commands.append(("reload", (pool_id, model_ref)))
            return ReloadResult(pool_id=pool_id, ok=False, model="demo", message="bad GGUF")

    bridge = Refusing()
    choice: list[str | None] = [None]
    view = make_view(qtbot, bridge, lambda _p, _pool: choice[0])
    button = view.pool_cards["gpu0"][0].reload_button
    button.click()
    assert bridge.commands == []
    choice[0] = "/m/x.gguf"
    button.click()
    qloop.wait_until(lambda: "failed" in view.result.text())
    assert "bad GGUF" in view.result.text()


def test_set_model_on_a_needs_model_pool_reloads_it(qtbot: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    bridge.pool_list = [pool_view("gpu0", state="needs_model", model="")]
    view = make_view(qtbot, bridge, lambda _p, _pool: "/m/first.gguf")
    view.pool_cards["gpu0"][0].set_model_button.click()
    qloop.wait_until(lambda: bool(bridge.commands))
    assert bridge.commands == [("reload", ("gpu0", "file:///m/first.gguf"))]


def test_restart_asks_first_and_says_what_state_follows(qtbot: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    bridge.pool_list = [pool_view("gpu0", state="starting", ready=False)]
    answers = [False, True]
    asked: list[str] = []

    def ask(_parent: Any, title: str, text: str) -> bool:
        asked.append(text)
        return answers.pop(0)

    view = make_view(qtbot, bridge, ask=ask)
    view.pool_cards["gpu0"][0].restart_button.click()
    assert bridge.commands == [] and asked[0].startswith("Restart pool gpu0?")
    view.pool_cards["gpu0"][0].restart_button.click()
    qloop.wait_until(lambda: "starting again" in view.result.text())
    assert bridge.commands == [("restart", "gpu0")]
    assert "restarted" not in view.result.text()


def test_a_reload_message_is_shown_once(qtbot: Any, qloop: QtAsync) -> None:
    class Saying(FakeBridge):
        async def reload(self, pool_id: str, model_ref: str) -> ReloadResult:
            return ReloadResult(
                pool_id=pool_id,
                ok=True,
                model="tiny-real",
                message="Pool gpu0 now serves tiny-real.",
            )

    view = make_view(qtbot, Saying(), lambda _p, _pool: "/m/tiny-real.gguf")
    view.pool_cards["gpu0"][0].reload_button.click()
    qloop.wait_until(lambda: "now serves" in view.result.text())
    assert view.result.text().count("now serves") == 1


# ---------------------------------------------------------------- engine log pane


def test_log_pane_follows_the_chosen_pools_engine_log(
    qtbot: Any, qloop: QtAsync, tmp_path: Path
) -> None:
    bridge = FakeBridge()
    bridge.pool_list = [pool_view("gpu0"), pool_view("gpu1")]
    bridge.pool_logs = {
        "gpu0": ["main: loading model", "srv  update_slots: all slots are idle"],
        "gpu1": ["load_tensors: offloaded 33/33 layers to GPU"],
    }
    opened: list[str] = []
    view = PoolsView(bridge, ask=lambda *_: True, open_file=opened.append)
    qtbot.addWidget(view)
    view.resize(900, 700)
    view.show()
    pane = view.log_pane
    qloop.wait_until(lambda: "all slots are idle" in pane.text.toPlainText(), 3.0)
    assert pane.file_label.text() == "/logs/gpu0.log"

    view.pool_cards["gpu1"][0].log_button.click()
    qloop.wait_until(lambda: "offloaded 33/33" in pane.text.toPlainText(), 3.0)
    assert ("pool_log", ("gpu1", 300)) in bridge.commands

    bridge.pool_logs["gpu1"].append("srv  log_server_r: request: POST /v1/completions 200")
    qloop.wait_until(lambda: "POST /v1/completions" in pane.text.toPlainText(), 3.0)

    pane.copy_button.click()
    assert "offloaded 33/33" in QGuiApplication.clipboard().text()
    pane.open_button.click()
    assert opened == ["/logs/gpu1.log"]
    view.grab().save(str(tmp_path / "pools-log.png"))


def test_tune_applies_new_engine_settings_through_the_controls(qtbot: Any, qloop: QtAsync) -> None:
    settings = parse_settings(
        {"pools": [{"id": "gpu0", "engine": "llamacpp", "device_mask": "0,1"}]}, {}
    )
    controls = FakeControls(settings)
    bridge = FakeBridge(controls)
    asked: list[Any] = []

    def tuner(_parent: Any, current: Any) -> dict[str, Any]:
        asked.append(current)
        return tuning_values(20, "on", "q8_0", "q8_0", split="3,1", extra="--mlock --threads 4")

    view = PoolsView(bridge, ask=lambda *_: True, tuner=tuner)
    qtbot.addWidget(view)
    view.pool_cards["gpu0"][0].tune_button.click()
    qloop.wait_until(lambda: bool(controls.applied), 3.0)
    assert asked[0]["gpu_layers"] == -1
    (pool,) = controls.applied[0].pools
    assert (pool.gpu_layers, pool.flash_attn, pool.cache_type_k) == (20, "on", "q8_0")
    assert pool.tensor_split == [3.0, 1.0]
    assert pool.extra_args == ["--mlock", "--threads", "4"]
    qloop.wait_until(lambda: "saved to the config" in view.result.text(), 3.0)

    controls.refuse = "pools[0].extra_args: extra_args may not contain --port"
    view.tune("gpu0")
    qloop.wait_until(lambda: "not changed" in view.result.text(), 3.0)
    assert "--port" in view.result.text()
    with pytest.raises(ValueError, match="tensor split"):
        tuning_values(-1, "auto", "f16", "f16", split="3;x", extra="")
