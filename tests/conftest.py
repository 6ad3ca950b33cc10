"""Shared pytest set-up: each fixtures module below starts one kind of real thing once per session."""

import os

import pytest

# The bundled sample holds enough edited drafts for a preference candidate: every refresh test would also train
# and score SFT+DPO. Tests of the method choice set their own threshold (tests/test_preference_training.py).
os.environ.setdefault("HOUSESTYLE_PREFERENCE_MIN_PAIRS", "1000000")
# The tests' widget starts auto and assist conversations on purpose, to drive both reply paths; a real widget key may
# choose no mode (HOUSESTYLE_WIDGET_MODES defaults to none: tests/test_hostile_two.py pins that).
os.environ.setdefault("HOUSESTYLE_WIDGET_MODES", '["auto", "assist"]')

pytest_plugins = [
    "tests.fixtures.stores",
    "tests.fixtures.models",
    "tests.fixtures.vllm",
    "tests.fixtures.service",
    "tests.fixtures.browser",
    "tests.fixtures.upstream",
]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group marks into the node ids
def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001 - pytest's hook signature
    """Under pytest-xdist (`make test` runs two workers) every test that starts a vLLM or uses the shared one (the
    browser tests' service does) runs on one worker: one shared vLLM per run, not one per worker (each is CPU- and
    memory-hungry on 2 cores), and the tests sharing it keep the order they have in a plain run."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if item.get_closest_marker("vllm") is not None or "vllm_server" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("vllm"))
