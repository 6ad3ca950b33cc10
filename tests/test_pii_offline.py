"""Redaction never reaches for the network: spaCy's model is an installed package, and e-mail domains are checked
against tldextract's bundled suffix list, not one downloaded at first use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent

# runs in a fresh interpreter: sockets refuse before anything is imported, and no cache of a suffix list exists
SCRIPT = r"""
import json, socket
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[1:] or args))
    raise OSError("network unreachable (test)")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

import tldextract.tldextract
from collector.pii import ConversationRedactor, RedactorConfig
from collector.pii.recognizers import OFFLINE_TLD_EXTRACT

redactor = ConversationRedactor(RedactorConfig())
done = redactor.redact_text("write to jane.doe@example.co.uk, li.wei@mail.example.cn or ops@shop.example")
import sys
redaction_imported_transformers = "transformers" in sys.modules
import transformers  # the trainer, in the same process, still imports it
print(json.dumps({
    "redaction_imported_transformers": redaction_imported_transformers,
    "transformers_after": transformers.__name__,
    "text": done.text,
    "attempts": attempts,
    "presidio_global_extractor_used": tldextract.tldextract.TLD_EXTRACTOR._extractor is not None,
    "ours": {"urls": list(OFFLINE_TLD_EXTRACT.suffix_list_urls), "cache": OFFLINE_TLD_EXTRACT._cache.enabled,
             "loaded": OFFLINE_TLD_EXTRACT._extractor is not None},
}))
"""


def test_redacting_emails_with_the_network_unreachable_makes_no_connection(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    env.pop("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", None)
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["text"] == "write to <EMAIL_1>, <EMAIL_2> or <EMAIL_3>"
    assert result["attempts"] == []  # not one connect, not one DNS look-up
    # the suffix list came from tldextract's bundled snapshot: no URL configured, no cache read or written
    assert result["ours"] == {"urls": [], "cache": False, "loaded": True}
    assert not result["presidio_global_extractor_used"]  # the module-level extractor that would download
    assert not any((tmp_path / "cache").rglob("*"))
    # Presidio's module-level import of transformers (NER engines HouseStyle never uses) is skipped: seconds per
    # redacting process; the trainer in the same process still gets it (collector/pii/__init__.py)
    assert result["redaction_imported_transformers"] is False and result["transformers_after"] == "transformers"
