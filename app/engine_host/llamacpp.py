"""One pool served by a local llama.cpp engine process, supervised.

``LlamaCppEngine`` runs llama.cpp's ``llama-server`` with one slot per
parallel request (continuous batching). One asyncio
task (the supervisor loop) owns the engine process: it starts it, waits for
health plus a one-token warm-up, restarts it after crashes following
``RestartPolicy``, swaps models on reload and stops it. Other tasks send it
commands and await the results; streams go straight to the engine's HTTP port.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp

from app.engine_host import process
from app.engine_host.lazy_session import LazySession
from app.engine_host.llamacpp_launch import (
    EngineCommand,
    EngineLauncher,
    EngineProcess,
    GpuIndices,
    LaunchFailed,
    LlamaCppSpec,
    model_id_for,
    resolve_model_ref,
)
from app.engine_host.llamacpp_stats import EngineStats
from app.engine_host.llamacpp_vram import GpuSnapshot, reload_misfit, vram_estimate_bytes
from app.engine_host.mailbox import Mailbox
from app.engine_host.openai_client import OpenAIStream, open_stream, request_body
from app.engine_host.publisher import PublishedStatus, StatusPublisher
from app.engine_host.restart_policy import CrashHistory, RestartPolicy, classify_exit
from app.engine_host.slot_affinity import SlotAffinity
from app.orchestrator.contracts import ENGINE_FEATURES, ErrorCode
from app.orchestrator.lifecycle import PoolState
from app.orchestrator.ports import Clock, EngineError, EngineRequest, PoolDescriptor, SystemClock

log = logging.getLogger(__name__)

__all__ = ["LlamaCppEngine", "LlamaCppSpec", "model_id_for", "resolve_model_ref"]

Sleep = Callable[[float], Coroutine[Any, Any, None]]
_STARTABLE = (PoolState.STOPPED, PoolState.FAILED)


@dataclass
class _Command:
    kind: Literal["start", "restart", "reload", "stop", "hung", "retune"]
    model_ref: str | None = None
    spec: LlamaCppSpec | None = None
    instance: EngineProcess | None = None
    reply: asyncio.Future[str] | None = None
    cause: str = ""


class LlamaCppEngine(PublishedStatus):
    """``EngineControl`` for one pool backed by a local llama.cpp engine process."""

    def __init__(
        self,
        spec: LlamaCppSpec,
        *,
        log_dir: Path,
        clock: Clock | None = None,
        policy: RestartPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        gpu_indices: GpuIndices | None = None,
        gpu_snapshot: GpuSnapshot | None = None,
    ) -> None:
        """``gpu_indices`` (NVML's view, blocking) lets a launch refuse a GPU the host lacks;
        ``gpu_snapshot`` (NVML's free VRAM, blocking) lets a reload refuse a model too big."""
        self._spec = spec
        self._log_path = log_dir / f"{spec.pool_id}.log"
        self._clock = clock if clock is not None else SystemClock()
        self._policy = policy if policy is not None else RestartPolicy()
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep
        self._pool = StatusPublisher(self._describe(spec.model_ref, None), clock=self._clock)
        self._model_ref = spec.model_ref
        self._http = LazySession(force_close=True)
        self._gpu_indices = gpu_indices
        self._gpu_snapshot = gpu_snapshot
        self._launcher = self._launcher_for(spec)
        self._mailbox: Mailbox[_Command] = Mailbox(self._supervise, name=f"pool-{spec.pool_id}")
        # Owned by the supervisor task:
        self._inst: EngineProcess | None = None
        self._launch: asyncio.Task[EngineProcess] | None = None
        self._launch_recovering = False
        self._launch_reply: asyncio.Future[str] | None = None
        self._candidate: asyncio.Task[EngineProcess] | None = None
        self._candidate_reply: asyncio.Future[str] | None = None
        self._candidate_spec: LlamaCppSpec | None = None
        self._timer: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[str] | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self.stats = EngineStats()  # written by the stats task only
        self._affinity = SlotAffinity(spec.slots)  # a fresh one per engine process
        self._retiring: set[asyncio.Task[int]] = set()
        self._hung: tuple[EngineProcess, str] | None = None
        self._last_crash = ""
        self._crashes_total = 0
        self._restarts_total = 0
        self._history = CrashHistory()
        self._stopping = False

    # ---- EngineControl ----

    @property
    def log_path(self) -> Path:
        """Return the file that collects the engine's output."""
        return self._log_path

    async def read_log(self, tail_lines: int) -> list[str]:
        """Return the last ``tail_lines`` lines of the engine's log, oldest first (may be []).

        Awaits a file read of at most 1 MiB in a worker thread.
        """

        def read() -> list[str]:
            text = process.read_log_tail(self._log_path, max_bytes=1024 * 1024)
            return text.splitlines()[-tail_lines:] if tail_lines > 0 else []

        return await asyncio.to_thread(read)

    @property
    def engine_pid(self) -> int | None:
        """Return the pid of the serving engine process, None when none serves."""
        inst = self._inst
        return inst.proc.pid if inst is not None else None

    @property
    def base_url(self) -> str | None:
        """Return the serving engine's loopback URL (without ``/v1``), None when none serves."""
        inst = self._inst
        return inst.base_url if inst is not None else None

    @property
    def engine_busy_slots(self) -> int | None:
        """Return the busy slots the engine itself last reported (``/slots``), None if unknown."""
        return self.stats.busy_slots if self._inst is not None else None

    async def read_slots(self) -> list[dict[str, Any]]:
        """Return the serving engine's ``/slots`` answer now ([] when none serves).

        Raises aiohttp errors or TimeoutError when the engine does not answer.
        """
        inst = self._inst
        if inst is None:
            return []
        stats = EngineStats()
        await stats.refresh(self._http(), inst.base_url, inst.headers)
        return stats.slots

    @property
    def api_key(self) -> str | None:
        """Return the serving engine's own API key (only the orchestrator holds it), or None."""
        inst = self._inst
        return inst.api_key if inst is not None else None

    async def start(self) -> None:
        """Start the engine; returns once it is starting (or needs a model). Never raises."""
        await self._mailbox.send(_Command("start"))

    async def restart(self) -> None:
        """Restart the engine process with the current model; returns once it is starting."""
        await self._mailbox.send(_Command("restart"))

    async def reload(self, model_ref: str) -> str:
        """Load ``model_ref`` beside the serving engine and swap once it is ready.

        Returns a message naming the new model. Raises EngineError when the
        new engine fails to become ready; the old one keeps serving then.
        Waits up to the startup timeout.
        """
        return await self._mailbox.send(_Command("reload", model_ref=model_ref))

    async def retune(self, spec: LlamaCppSpec) -> str:
        """Run the current model with ``spec`` (new flags, slots or context): start it
        beside the serving engine and swap once it is ready, like a reload.

        Returns a message. Raises EngineError when the new engine fails to become
        ready (the old one keeps serving with its old settings) and ValueError for
        another pool's spec. Without a model it only keeps ``spec`` for the next start.
        """
        if spec.pool_id != self._spec.pool_id:
            raise ValueError(f"spec of pool {spec.pool_id!r} given to pool {self._spec.pool_id!r}")
        sent = await self._mailbox.send(_Command("retune", model_ref=self._model_ref, spec=spec))
        return sent or f"pool {spec.pool_id} keeps its new settings for its next start"

    async def stop(self) -> None:
        """Stop the engine (SIGTERM, SIGKILL after the grace period) and wait for it to exit."""
        await self._mailbox.close(_Command("stop"))
        await self._http.close()

    async def open_stream(self, request: EngineRequest) -> OpenAIStream:
        """Send ``request`` to the engine; returns once it accepted it.

        Raises EngineError: POOL_UNREADY when the pool is not ready, else
        what ``openai_client.open_stream`` raises. Awaits the response headers.
        """
        inst = self._inst
        if inst is None or not self._pool.state.serving:
            raise self._pool.unready()
        path, body = request_body(request, self._pool.descriptor.model)
        slot, warm = self._affinity.acquire(request.session_id)
        body["id_slot"] = slot  # a session's turns go to the slot caching its prompt
        body["cache_prompt"] = True
        try:
            stream = await self._open(inst, path, body, self._spec.decode_timeout_s, slot)
        except BaseException:
            self._affinity.release(slot)
            raise
        stream.expected_warm = warm
        return stream

    # ---- streams ----

    async def _open(
        self, inst: EngineProcess, path: str, body: dict[str, object], timeout_s: float, slot: int
    ) -> OpenAIStream:
        affinity = self._affinity

        def finished(error: EngineError | None) -> None:
            affinity.release(slot)
            if error is not None and error.code is ErrorCode.DECODE_TIMEOUT:
                cause = f"hung (no token within {timeout_s:g} s), killed"
                self._mailbox.post(_Command("hung", instance=inst, cause=cause))

        try:
            return await open_stream(
                self._http(),
                f"{inst.base_url}/v1/{path}",
                body,
                decode_timeout_s=timeout_s,
                connect_timeout_s=self._spec.connect_timeout_s,
                name=f"engine of pool {self._spec.pool_id}",
                headers=inst.headers,
                secrets=(inst.api_key,),
                on_finish=finished,
            )
        except EngineError as exc:
            if exc.code is ErrorCode.DECODE_TIMEOUT:  # no response headers in time: a hang too
                cause = f"hung (no answer within {timeout_s:g} s), killed"
                self._mailbox.post(_Command("hung", instance=inst, cause=cause))
            raise

    async def _watch_health(self, inst: EngineProcess) -> str:
        """Probe the engine every health interval; return why once it stops answering.

        Any HTTP answer counts as alive (a busy engine may answer 503 or 404);
        silence past the probe timeout does not. Runs until cancelled or failed.
        """
        spec = self._spec
        url = inst.base_url + "/health"
        timeout = aiohttp.ClientTimeout(total=spec.health_timeout_s)
        while True:
            await asyncio.sleep(spec.health_interval_s)
            try:
                async with self._http().get(url, timeout=timeout):
                    pass
            except TimeoutError:
                limit = spec.health_timeout_s
                return f"hung (no answer to the health probe within {limit:g} s), killed"
            except (aiohttp.ClientError, OSError):
                pass  # refused or reset: the exit watcher reports a dead engine

    # ---- the supervisor task ----

    async def _supervise(self) -> None:
        pending_cmd: asyncio.Task[_Command] | None = None
        self._stopping = False
        try:
            while not self._stopping:
                if pending_cmd is None:
                    pending_cmd = asyncio.ensure_future(self._mailbox.commands.get())
                waits = self._waitables(pending_cmd)
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if pending_cmd.done():
                    command, pending_cmd = pending_cmd.result(), None
                    await self._on_command(command)
                else:
                    await self._on_event()
        finally:
            if pending_cmd is not None:
                pending_cmd.cancel()
            await self._teardown()
            self._refuse_queued(pending_cmd)

    def _refuse_queued(self, pending_cmd: asyncio.Task[_Command] | None) -> None:
        """Answer commands that arrived while the pool stopped (no await: runs last)."""
        taken = []
        if pending_cmd is not None and pending_cmd.done() and not pending_cmd.cancelled():
            taken.append(pending_cmd.result())
        stopped = EngineError(ErrorCode.POOL_UNAVAILABLE, f"pool {self._spec.pool_id} stopped")
        self._mailbox.refuse_queued(stopped, *taken)

    def _waitables(self, pending_cmd: asyncio.Task[_Command]) -> set[asyncio.Future[Any]]:
        tasks: list[asyncio.Future[Any] | None] = [pending_cmd, self._launch]
        tasks += [self._candidate, self._timer, self._watch]
        tasks.append(self._inst.exited if self._inst else None)
        return {t for t in tasks if t is not None}

    async def _on_event(self) -> None:
        if self._inst is not None and self._inst.exited.done():
            self._on_exit(self._inst)
        elif self._watch is not None and self._watch.done():
            watch, self._watch = self._watch, None
            if not watch.cancelled() and watch.exception() is None:
                self._on_hung(self._inst, watch.result())
        elif self._launch is not None and self._launch.done():
            self._on_launched(self._launch)
        elif self._candidate is not None and self._candidate.done():
            await self._on_candidate(self._candidate)
        elif self._timer is not None and self._timer.done():
            self._timer = None
            self._restarts_total += 1
            self._begin_launch(self._model_ref, recovering=True, detail="restarting after crash")

    async def _on_command(self, command: _Command) -> None:
        if command.kind == "stop":
            self._stopping = True
        elif command.kind == "hung":
            self._on_hung(command.instance, command.cause)
        elif command.kind == "retune" and self._model_ref is None:
            assert command.spec is not None
            self._set_spec(command.spec)  # nothing runs: the next start uses it
        elif command.kind in ("reload", "retune"):
            await self._on_reload(command)
            return
        elif command.kind == "restart" or self._pool.state in _STARTABLE:
            await self._cancel_all()
            self._history = CrashHistory()
            missing = self._missing_model() if self._pool.state in _STARTABLE else None
            if missing is not None:
                self._publish(PoolState.NEEDS_MODEL, missing)
            else:
                self._begin_launch(self._model_ref, recovering=False, detail="starting")
        if command.reply is not None and not command.reply.done():
            command.reply.set_result("")

    async def _on_reload(self, command: _Command) -> None:
        assert command.reply is not None and command.model_ref is not None
        ref = command.model_ref
        if self._candidate is not None:
            why = f"a reload of pool {self._spec.pool_id} is already in progress; retry later"
            busy = EngineError(ErrorCode.POOL_UNAVAILABLE, why, retriable=True)
            command.reply.set_exception(busy)
        elif (misfit := await self._misfit(command.spec or self._spec, ref)) is not None:
            command.reply.set_exception(EngineError(ErrorCode.INVALID_PARAMS, misfit))
        elif self._inst is not None:
            launcher = self._launcher_for(command.spec) if command.spec else self._launcher
            self._candidate = asyncio.create_task(launcher.launch(ref))
            self._candidate_reply = command.reply
            self._candidate_spec = command.spec
            self._publish(self._pool.state, f"loading {model_id_for(ref)} beside the current model")
        else:
            await self._cancel_all()
            if command.spec is not None:
                self._set_spec(command.spec)
            self._history = CrashHistory()
            self._model_ref = ref
            self._begin_launch(ref, recovering=False, detail="starting")
            self._launch_reply = command.reply

    async def _misfit(self, spec: LlamaCppSpec, model_ref: str) -> str | None:
        """Return why ``model_ref`` does not fit ``spec``'s GPUs now, None when it may load."""
        if self._gpu_snapshot is None or spec.device_mask == "cpu":
            return None
        gpus = await asyncio.to_thread(self._gpu_snapshot)
        return await asyncio.to_thread(reload_misfit, spec, model_ref, gpus)

    def _missing_model(self) -> str | None:
        """Return why the configured model is absent ("needs a model", with its path), or None.

        Only for the pool's own model: a reload's path gets the launcher's one
        answer for every unusable path, so callers cannot probe for files.
        """
        if not self._model_ref:
            return None
        try:
            path = resolve_model_ref(self._model_ref)
        except ValueError:
            return None
        if path.exists():
            return None
        return (
            f"needs a model: the model file {path} does not exist; put the GGUF file there "
            "or choose another model"
        )

    def _begin_launch(self, model_ref: str | None, *, recovering: bool, detail: str) -> None:
        if model_ref is None:
            detail = self._spec.needs_model_detail or "no model configured; reload a model to serve"
            self._publish(PoolState.NEEDS_MODEL, detail)
            return
        self._pool.descriptor = self._describe(model_ref, None)
        self._launch = asyncio.create_task(self._launcher.launch(model_ref))
        self._launch_recovering = recovering
        self._publish(PoolState.STARTING, f"{detail}: loading {model_id_for(model_ref)}")

    def _on_launched(self, task: asyncio.Task[EngineProcess]) -> None:
        self._launch = None
        reply, self._launch_reply = self._launch_reply, None
        try:
            inst = task.result()
        except LaunchFailed as exc:
            if self._launch_recovering and exc.transient:
                self._after_crash(f"restart failed: {exc.detail}")
            else:
                self._publish(PoolState.FAILED, f"load failed: {exc.detail}")
            _resolve(reply, EngineError(exc.code, f"load failed: {exc.detail}"))
            return
        recovered = f"recovered after: {self._last_crash}" if self._launch_recovering else ""
        self._serve(inst, recovered)
        _resolve(reply, f"pool {self._spec.pool_id} now serves {self._pool.descriptor.model}")

    async def _on_candidate(self, task: asyncio.Task[EngineProcess]) -> None:
        self._candidate = None
        reply, self._candidate_reply = self._candidate_reply, None
        spec, self._candidate_spec = self._candidate_spec, None
        try:
            inst = task.result()
        except LaunchFailed as exc:
            current = self._pool.descriptor.model
            why = f"reload failed: {exc.detail}; {current} keeps serving"
            _resolve(reply, EngineError(exc.code, why))
            if self._inst is None:
                self._schedule_restart(f"crashed during a reload; {why}")
            else:
                self._publish(self._pool.state, why)
            return
        old = self._inst
        if spec is not None:
            self._set_spec(spec)
        self._history = CrashHistory()
        self._model_ref = inst.model_ref
        self._serve(inst, "")
        if old is not None:
            self._retire(old)
        _resolve(reply, f"pool {self._spec.pool_id} now serves {self._pool.descriptor.model}")

    def _launcher_for(self, spec: LlamaCppSpec) -> EngineLauncher:
        return EngineLauncher(
            spec, log_path=self._log_path, session=self._http, gpu_indices=self._gpu_indices
        )

    def _set_spec(self, spec: LlamaCppSpec) -> None:
        self._spec = spec
        self._launcher = self._launcher_for(spec)

    def _serve(self, inst: EngineProcess, detail: str) -> None:
        self._inst = inst
        self._affinity = SlotAffinity(self._spec.slots)
        self._stop_watch()
        self._watch = asyncio.create_task(self._watch_health(inst))
        poll = self.stats.poll(self._http, inst.base_url, inst.headers, self._spec.stats_interval_s)
        self._stats_task = asyncio.create_task(poll)
        self._pool.descriptor = self._describe(inst.model_ref, inst.command, inst.features)
        self._history = self._policy.on_ready(self._history, self._clock.monotonic())
        self._publish(PoolState.READY, detail)

    def _on_exit(self, inst: EngineProcess) -> None:
        self._inst = None
        self._stop_watch()
        tail = process.read_log_tail(self._log_path, since=inst.log_offset)
        if self._hung is not None and self._hung[0] is inst:
            cause = self._hung[1]
        else:
            cause = classify_exit(inst.exited.result(), tail)
        self._hung = None
        log.warning("pool %s: engine exited while serving: %s", self._spec.pool_id, cause)
        self._after_crash(f"crashed while serving: {cause}")

    def _on_hung(self, inst: EngineProcess | None, cause: str) -> None:
        if inst is not None and inst is self._inst and inst.proc.returncode is None:
            if self._hung is None or self._hung[0] is not inst:
                self._hung = (inst, cause)
            log.warning("pool %s: engine %s", self._spec.pool_id, cause)
            process.signal_group(inst.proc.pid, signal.SIGKILL)

    def _stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._stats_task is not None:
            self._stats_task.cancel()
            self._stats_task = None
            self.stats.clear()

    def _after_crash(self, detail: str) -> None:
        self._last_crash = detail
        self._crashes_total += 1
        self._history = self._policy.on_crash(self._history, self._clock.monotonic())
        if self._candidate is not None:
            self._publish(PoolState.STARTING, f"{detail}; waiting for the model being loaded")
            return
        self._schedule_restart(detail)

    def _schedule_restart(self, detail: str) -> None:
        now = self._clock.monotonic()
        decision = self._policy.decide(self._history, now, self._rng)
        if not decision.restart:
            self._publish(PoolState.FAILED, f"{detail}; {decision.reason}")
            return
        self._timer = asyncio.create_task(self._sleep(decision.delay_s))
        self._publish(PoolState.STARTING, f"{detail}; restarting in {decision.delay_s:.1f} s")

    def _retire(self, inst: EngineProcess) -> None:
        task = asyncio.create_task(process.terminate(inst.proc, self._spec.stop_grace_s))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _cancel_all(self) -> None:
        """Cancel timers and launches and stop the serving engine (keeps the state)."""
        for task in (self._timer, self._launch, self._candidate):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
                if not task.cancelled():
                    task.exception()  # retrieved: a launch that failed as it was cancelled
        self._timer = self._launch = self._candidate = None
        self._stop_watch()
        inst, self._inst = self._inst, None
        if inst is not None:
            await process.terminate(inst.proc, self._spec.stop_grace_s)
        for reply in (self._launch_reply, self._candidate_reply):
            _resolve(reply, EngineError(ErrorCode.POOL_UNAVAILABLE, "superseded", retriable=True))
        self._launch_reply = self._candidate_reply = None
        self._candidate_spec = None

    async def _teardown(self) -> None:
        if self._pool.can(PoolState.STOPPING):
            self._publish(PoolState.STOPPING, "stopping")
        await self._cancel_all()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        if self._pool.can(PoolState.STOPPED):
            self._publish(PoolState.STOPPED, "")

    # ---- status ----

    def _describe(
        self,
        model_ref: str | None,
        command: EngineCommand | None,
        features: frozenset[str] = frozenset(ENGINE_FEATURES),
    ) -> PoolDescriptor:
        spec = self._spec
        if command is not None:
            version, slots = command.version, command.slots
        else:
            version, slots = "llama-server", spec.slots
        return PoolDescriptor(
            pool_id=spec.pool_id,
            engine="llamacpp",
            engine_version=version,
            model=model_id_for(model_ref),
            ctx=spec.ctx,
            slots=slots,
            device_mask=spec.device_mask,
            demo=spec.demo,
            vram_estimate_bytes=vram_estimate_bytes(spec, model_ref),
            features=features,
        )

    def _publish(self, state: PoolState, detail: str) -> None:
        crashes = self._policy.crashes_recent(self._history, self._clock.monotonic())
        self._pool.publish(
            state,
            detail,
            crashes_recent=crashes,
            crashes_total=self._crashes_total,
            restarts_total=self._restarts_total,
        )


def _resolve(reply: asyncio.Future[str] | None, outcome: str | BaseException) -> None:
    if reply is None or reply.done():
        return
    if isinstance(outcome, BaseException):
        reply.set_exception(outcome)
    else:
        reply.set_result(outcome)
