"""Shared pytest set-up: each fixtures module below starts one kind of real thing once per session."""

pytest_plugins = [
    "tests.fixtures.stores",
    "tests.fixtures.models",
    "tests.fixtures.vllm",
    "tests.fixtures.service",
    "tests.fixtures.browser",
]
