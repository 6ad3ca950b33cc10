"""The one place that knows vLLM's flags and environment: start, wait for, supervise and stop a vLLM server."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from core.adapter_store import open_adapter_store
from core.errors import InputError
from core.settings import Settings
from serving.errors import VllmStartError

log = logging.getLogger("housestyle.serving")

BASE_SERVED_NAME = "housestyle-base"
# a log line that states an error: a logged ERROR, an exception's name, or pydantic's "Value error, ..."
_ERROR_LINE = re.compile(r"\bERROR\b|\w+(?:Error|Exception)\b|\berror[,:]")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lora_slots(configured: int | None, brands: int) -> int:
    """Adapters each vLLM must hold at once: every brand's live and canary version, plus one being swapped in.

    `configured` (HOUSESTYLE_MAX_LORAS) None sizes it from the brands; a configured value that is too small is an
    error that says what it needs, rather than adapters silently evicted under load."""
    needed = 2 * max(brands, 1) + 1
    if configured is None:
        return max(needed, 4)
    if configured < needed:
        raise InputError(
            f"HOUSESTYLE_MAX_LORAS={configured} is too small for {brands} brand(s): each brand's live and canary "
            f"version plus one being swapped in need {needed}; raise it to {needed} or unset it to size it from "
            "the brands"
        )
    return configured


def vllm_command(settings: Settings, *, port: int, max_loras: int | None = None) -> list[str]:
    """The command line: nothing secret on it (anyone on the machine can read it with `ps`); the key is in the
    environment (`vllm_environment`). `max_loras`: see `lora_slots` (default: sized for one brand)."""
    # the `vllm` console script fails on the CPU build; the module entry point works everywhere
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", settings.resolved_base_model,
        "--served-model-name", BASE_SERVED_NAME,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--enable-lora",
        "--max-lora-rank", str(settings.max_lora_rank),
        "--max-loras", str(max_loras or lora_slots(settings.max_loras, 1)),
        "--gpu-memory-utilization", str(settings.vllm_gpu_memory_utilization),
        # runtime LoRA updates only work with one API server process
        "--api-server-count", "1",
        *shlex.split(settings.vllm_extra_args),
    ]


def replica_cpu_lists(cpus: list[int], replicas: int) -> list[str] | None:
    """The CPUs each of `replicas` managed servers binds its compute threads to: the machine's CPUs cut into equal
    contiguous runs, e.g. [0, 1] for 2 -> ["0", "1"]. None (vLLM's own choice) for one replica, or fewer CPUs than
    replicas. Left to itself every CPU build of vLLM binds to the same cores, so replicas would fight over them
    (and a restarting one would starve while the others serve)."""
    if replicas < 2 or len(cpus) < replicas:
        return None
    share = len(cpus) // replicas
    runs = [sorted(cpus)[index * share:(index + 1) * share] for index in range(replicas)]
    return [",".join(str(cpu) for cpu in run) for run in runs]


def adapter_store_environment(settings: Settings) -> dict[str, str]:
    """What the adapter store's resolver (`serving.lora_resolver`) reads in vLLM's processes: the store, its
    endpoint and the cache, as these settings say (an empty store turns the resolver off)."""
    store = open_adapter_store(settings)  # a bad HOUSESTYLE_ADAPTER_STORE is one error here, not in vLLM's log
    environment = {"HOUSESTYLE_ADAPTER_STORE": settings.adapter_store}
    if store is not None:
        environment["HOUSESTYLE_ADAPTER_CACHE_DIR"] = str(store.cache_dir)
        if settings.adapter_store_endpoint_url:
            environment["HOUSESTYLE_ADAPTER_STORE_ENDPOINT_URL"] = settings.adapter_store_endpoint_url
    return environment


def vllm_environment(settings: Settings, *, api_key: str, cpu_bind: str | None = None) -> dict[str, str]:
    """vLLM's environment. VLLM_API_KEY guards its /v1 routes when no --api-key is given (vLLM 0.32,
    `entrypoints/serve/middleware/register.py`); /proc/PID/environ, unlike the command line, only its owner reads.
    `cpu_bind` (see `replica_cpu_lists`) sets VLLM_CPU_OMP_THREADS_BIND unless the environment already does."""
    binding = {}
    if cpu_bind and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        binding["VLLM_CPU_OMP_THREADS_BIND"] = cpu_bind
    return {
        **os.environ,
        **binding,
        **adapter_store_environment(settings),
        "VLLM_API_KEY": api_key,
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_CPU_KVCACHE_SPACE": str(settings.vllm_cpu_kvcache_gib),
        "PYTHONUNBUFFERED": "1",
    }


class VllmServer:
    """A vLLM OpenAI server in its own process group, logging to HOME/logs/vllm-PORT.log, restarted if it dies."""

    def __init__(
        self, settings: Settings, *, port: int | None = None, api_key: str, cpu_bind: str | None = None,
        max_loras: int | None = None,
    ) -> None:
        self.settings = settings
        self.max_loras = max_loras
        self.port = port or free_port()
        self.api_key = api_key
        self.cpu_bind = cpu_bind
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = settings.home / "logs" / f"vllm-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = False
        self._supervisor: asyncio.Task | None = None

    def launch(self) -> None:
        """Start the process (returns at once; `wait_healthy` waits for it)."""
        base = self.settings.resolved_base_model
        if "/" in base and not Path(base).exists() and Path(base).is_absolute():
            raise VllmStartError(f"base model {base} does not exist; run `housestyle base build` or set HOUSESTYLE_BASE_MODEL")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            # own session = own process group, so stop() reaches vLLM's engine-core children too (no orphans)
            self.process = subprocess.Popen(
                vllm_command(self.settings, port=self.port, max_loras=self.max_loras),
                env=vllm_environment(self.settings, api_key=self.api_key, cpu_bind=self.cpu_bind),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        log.info("started vLLM pid %s on %s, log %s", self.process.pid, self.url, self.log_path)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 25, *, max_bytes: int = 65_536) -> str:
        """The log's last `lines` lines (from its last `max_bytes` only: a log of a long-lived server is large)."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - max_bytes))
                text = handle.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def last_log_line(self) -> str:
        """The log's last error line (else its last line), for one-line errors; the whole log stays in the file."""
        lines = [line.strip() for line in self.log_tail(80).splitlines() if line.strip()]
        errors = [line for line in lines if _ERROR_LINE.search(line)]
        return (errors or lines or ["(empty)"])[-1][:300]

    async def wait_healthy(self, timeout_s: float | None = None) -> None:
        """Poll /health until it answers 200; raise VllmStartError with the log tail if vLLM dies or times out."""
        deadline = time.monotonic() + (timeout_s or self.settings.vllm_start_timeout_s)
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    code = self.process.returncode if self.process else None
                    last = await asyncio.to_thread(self.last_log_line)
                    raise VllmStartError(
                        f"vLLM exited with code {code} while starting; its log is {self.log_path} (last error: {last})"
                    )
                try:
                    if (await client.get(f"{self.url}/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
        last = await asyncio.to_thread(self.last_log_line)
        raise VllmStartError(
            f"vLLM was not healthy after {timeout_s or self.settings.vllm_start_timeout_s:.0f}s; its log is "
            f"{self.log_path} (last error: {last}); raise HOUSESTYLE_VLLM_START_TIMEOUT_S if it was "
            "still loading"
        )

    async def start(self) -> None:
        await asyncio.to_thread(self.launch)
        try:
            await self.wait_healthy()
        except VllmStartError:
            await asyncio.to_thread(self.kill)
            raise

    def supervise(self) -> None:
        """Restart the server whenever it dies; the replica pool re-loads adapters once /health answers again."""
        self._supervisor = asyncio.create_task(self._supervise(), name=f"housestyle-vllm-{self.port}")

    async def _supervise(self) -> None:
        # Everything that blocks (waiting for the old process group to go, reading its log, starting the new one)
        # runs in a thread: this loop also serves every customer request, and must keep answering meanwhile.
        while not self._stopping:
            await asyncio.sleep(0.5)
            if self._stopping or self.alive():
                continue
            try:
                await self._restart()
            except VllmStartError as exc:
                log.error("restarting vLLM on %s failed: %s", self.url, exc)
            except Exception:  # the supervisor must outlive any one failed restart: the next round tries again
                log.exception("restarting vLLM on %s failed", self.url)

    async def _restart(self) -> None:
        code = self.process.returncode if self.process else None
        tail = await asyncio.to_thread(self.log_tail, 10)
        log.error("vLLM on %s exited with code %s; restarting. Last lines:\n%s", self.url, code, tail)
        await asyncio.to_thread(self.kill)  # reap leftovers of the old process group before reusing the port
        self.restarts += 1
        await asyncio.sleep(min(30.0, 2.0 * self.restarts))
        await asyncio.to_thread(self.launch)
        await self.wait_healthy()

    def kill(self, grace_s: float = 10.0) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever of the group is left after `grace_s`."""
        if self.process is None:
            return
        pgid = self.process.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            self.process.poll()
            try:
                os.killpg(pgid, 0)  # anyone of the group (engine-core children included) still there?
            except ProcessLookupError:
                break
            time.sleep(0.2)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    async def stop_supervising(self) -> None:
        """Stop watching the process (it keeps running); `supervise` may be called again later."""
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def stop(self) -> None:
        """Stop supervising and stop the server (SIGTERM, then SIGKILL): nothing of it is left running."""
        self._stopping = True
        await self.stop_supervising()
        await asyncio.to_thread(self.kill)
