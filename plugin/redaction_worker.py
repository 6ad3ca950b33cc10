"""Inside `housestyle serve`: the background worker that redacts new conversations and applies the retention period.

It runs in its own process, never on the request path: the recorder stores raw text only, and this worker writes
the redacted text beside it a moment later (`collector.pii.ingest`). A process, not a thread: NLP is seconds of
Python per batch, and in the service's process it held the interpreter lock the event loop needs (the plugin's CPU
per request tripled and p99 went to seconds). The process runs at a lower priority, so under a burst the model
server and the API go first and redaction catches up after. The PII models load on the first conversation
that needs them, not at start-up. One worker per store does the work (the instance holding the store's `redaction`
lease, `core.locks.Lease`), so several plugin instances on one Postgres do not redact the same conversation twice
nor sweep and purge once each; the others skip their passes after one store query, and take the lease over once its
holder stops renewing it (within `LEASE`; at once when the holder's process on the same machine is gone).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from datetime import timedelta
from typing import Any

from collector.pii.erasure import purge_expired_raw
from collector.pii.ingest import RedactionPass, redact_pending, redactor_for, sweep
from core.locks import Lease, release
from core.settings import Settings
from plugin.jsonlog import configure_json_logging

log = logging.getLogger("housestyle.redaction")

LOCK = "redaction"
LEASE = timedelta(minutes=10)  # renewed every pass and during one; a dead worker elsewhere is replaced within it
SWEEP_EVERY_S = 600.0  # the full scan for rows the id watermarks cannot vouch for
PURGE_EVERY_S = 3600.0
# at nice 19 on a busy machine (a refresh training beside it) a worker ending its pass and its interpreter took seconds
# of the service's stop; nothing it does is lost when cut (each batch is one transaction, the watermarks say what's left)
STOP_GRACE_S = 1.0
NICENESS = 19  # the lowest priority: under load the API and the model server go first, redaction catches up after


class RedactionWorker:
    """`start()` once with the service, `stop()` on shutdown; `run_once()` is one pass (tests call it directly)."""

    def __init__(self, settings: Settings, *, holder: str | None = None) -> None:
        self.settings = settings
        self.url = settings.resolved_database_url
        # the service's id: its worker process holds the lease for it (`start()` hands it over)
        self.lease = Lease(LOCK, url=self.url, ttl=LEASE, holder=holder)
        self._stop = threading.Event()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._writer: Any = None  # the service's end of the pipe the worker process waits on
        self._last_sweep = self._last_purge = float("-inf")  # both due on the first pass (monotonic may be < 1 h)

    def run_once(self) -> RedactionPass:
        """Redact what arrived since the last pass (and, when due, sweep and purge expired raw text)."""
        if not self.lease.hold():
            return RedactionPass()  # another instance redacts this store
        now = time.monotonic()
        with self.lease.renewing():  # a pass may outlast the lease (a burst, the models' first load)
            redactor = lambda: redactor_for(self.settings)  # noqa: E731  (built only once work arrives)
            done = redact_pending(self.url, redactor)
            if now - self._last_sweep >= SWEEP_EVERY_S:
                done += sweep(self.url, redactor)
                self._last_sweep = now
            if now - self._last_purge >= PURGE_EVERY_S:
                if purged := purge_expired_raw(self.url, self.settings):
                    log.info("raw text of %s conversations replaced by its redacted form (retention)", purged)
                self._last_purge = now
            return done

    def _run(self, stop: Any = None) -> None:
        stop = stop or self._stop
        try:
            while not stop.wait(self.settings.redact_interval_s):
                try:
                    done = self.run_once()
                    if done.conversations:
                        log.info("redacted %s conversations (%s texts)", done.conversations, done.texts)
                except Exception:  # the worker must outlive one bad pass; the next pass tries again
                    log.exception("redaction pass failed; retrying on the next pass")
        finally:
            try:  # stopped: another instance's next pass takes over, not the lease's end
                self.lease.release()
            except Exception as exc:
                log.warning("could not hand on the redaction lease: %s", exc)

    def start(self) -> None:
        """Run the passes in a child process (spawned: it shares nothing with the service's threads and loop)."""
        context = multiprocessing.get_context("spawn")
        # the child stops when this pipe closes: on `stop()`, and also when the service dies outright (the kernel
        # closes its end), so the worker never outlives the service
        reader, self._writer = context.Pipe(duplex=False)
        self._process = context.Process(target=_worker_process, args=(self.settings, reader, self.lease.holder),
                                        name="housestyle-redaction", daemon=True)
        self._process.start()
        reader.close()

    def stop(self) -> None:
        """Close the pipe; a worker still in a pass after STOP_GRACE_S is ended (its open transaction rolls back,
        the next pass anywhere redoes it), and its lease is handed on at once either way."""
        self._stop.set()
        if self._writer is not None:
            self._writer.close()
        process = self._process
        if process is not None:
            process.join(timeout=STOP_GRACE_S)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
            release(LOCK, self.lease.holder, url=self.url)  # a worker cut mid-pass never reached its own release


class _UntilClosed:
    """`wait(timeout)` like an Event's: True once the service closed its end of the pipe (stop, or it died)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def wait(self, timeout: float) -> bool:
        return self.connection.poll(timeout)


def _worker_process(settings: Settings, connection: Any, holder: str) -> None:
    """The child process: lowest priority, the service's JSON log lines, passes until the service's end of the
    pipe closes."""
    try:
        os.nice(NICENESS)
    except OSError:
        pass  # a platform without nice: same priority as the service
    configure_json_logging()
    try:
        RedactionWorker(settings, holder=holder)._run(_UntilClosed(connection))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent stops us anyway
        pass
