"""Inside `housestyle serve`: the background worker that redacts new conversations and applies the retention period.

It runs in its own thread, never on the request path: the recorder stores raw text only, and this worker writes the
redacted text beside it a moment later (`collector.pii.ingest`). The PII models load on the first conversation
that needs them, not at start-up. One worker per store does the work at a time (a job lock), so several plugin
instances on one Postgres do not redact the same conversation twice.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from collector.errors import ConflictError
from collector.locks import job_lock
from collector.pii.erasure import purge_expired_raw
from collector.pii.ingest import RedactionPass, redact_pending, redactor_for, sweep
from collector.settings import Settings

log = logging.getLogger("housestyle.redaction")

LOCK = "redaction"
SWEEP_EVERY_S = 600.0  # the full scan for rows the id watermarks cannot vouch for
PURGE_EVERY_S = 3600.0


class RedactionWorker:
    """`start()` once with the service, `stop()` on shutdown; `run_once()` is one pass (tests call it directly)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.resolved_database_url
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sweep = self._last_purge = 0.0

    def run_once(self) -> RedactionPass:
        """Redact what arrived since the last pass (and, when due, sweep and purge expired raw text)."""
        now = time.monotonic()
        try:
            with job_lock(LOCK, ttl=timedelta(minutes=10), url=self.url):
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
        except ConflictError:
            return RedactionPass()  # another instance is redacting this store right now

    def _run(self) -> None:
        while not self._stop.wait(self.settings.redact_interval_s):
            try:
                done = self.run_once()
                if done.conversations:
                    log.info("redacted %s conversations (%s texts)", done.conversations, done.texts)
            except Exception:  # the worker must outlive one bad pass; the next pass tries again
                log.exception("redaction pass failed; retrying on the next pass")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="housestyle-redaction", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
