"""`make test`'s two workers: every test that starts or uses a vLLM runs on one of them (tests/conftest.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_vllm_tests_share_one_worker_under_make_tests_layout(tmp_path: Path) -> None:
    """Catches: the group marks added after pytest-xdist read them (our hook not `tryfirst`), or a pytest whose node
    ids xdist can no longer tag (9.2 with xdist 3.8: pytest-dev/pytest-xdist#1386); either way each worker would
    start its own session vLLM and the shared-vLLM tests would lose their order, with nothing failing."""
    (tmp_path / "conftest.py").write_text(
        "import pytest\n"
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n"
        "def pytest_configure(config):\n"
        "    config.addinivalue_line('markers', 'vllm: starts or uses a vLLM')\n"
    )
    (tmp_path / "test_layout.py").write_text(
        "import pytest\n"
        "@pytest.mark.vllm\n"
        "@pytest.mark.parametrize('n', range(6))\n"
        "def test_on_vllm(n):\n    pass\n"
        "@pytest.mark.parametrize('n', range(6))\n"
        "def test_elsewhere(n):\n    pass\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    workers = {test: worker for worker, test in re.findall(r"\[(gw\d)\] \[\s*\d+%\] PASSED \S+::(test_on_vllm\[\d\]\S*)",
                                                           run.stdout)}
    assert len(workers) == 6, run.stdout[-3000:]
    assert all(test.endswith("@vllm") for test in workers), sorted(workers)
    assert len(set(workers.values())) == 1, workers
