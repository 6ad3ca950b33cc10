"""Issue 28 item 8, the `model` field: SECURITY.md promises a `model` that is not storable text is a 422. A lone
surrogate is refused by pydantic's own string parsing (so tests/test_input_edges.py's surrogate-model case passes
even with `model: str`); only a NUL tells whether `model` is checked as storable text (`plugin.openai.protocol.Text`).
Catches `model: Text` turned back into `model: str` (the NUL model then answers 404 "does not exist")."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from plugin.openai.protocol import ChatCompletionRequest
from tests.test_input_edges import completion_body, post_raw


def test_a_model_name_with_a_nul_is_refused_by_the_request_model() -> None:
    with pytest.raises(ValidationError, match="NUL"):
        ChatCompletionRequest.model_validate(completion_body(model="house\x00style"))


def test_a_model_name_with_a_nul_is_a_422(plugin_service) -> None:
    answer = post_raw(plugin_service, json.dumps(completion_body(model="house\x00style")),
                      path="/v1/chat/completions", role="agent")
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"]
