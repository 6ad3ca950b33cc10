"""An OpenAI-shaped chat server that answers at once, for measuring the plugin's own cost (`plugin_load.py
--instant-upstream`): with no model behind it, what the plugin adds is all the time and CPU there is to see.

It answers GET /health, GET /v1/models (one base model, and the adapters loaded), POST /v1/chat/completions (the same
short reply, as one JSON body or, with "stream": true, as server-sent events with a usage chunk and [DONE]; with
"logprobs", fixed per-token log-probs), POST /v1/completions (the same, one choice per prompt: the fingerprint
probe gets the same answer every time) and vLLM's runtime
LoRA endpoints (/v1/load_lora_adapter, /v1/unload_lora_adapter: names only, no weights), for swaps
(`bench/fleet.py`). Raw asyncio and
httptools on uvloop, so the stand-in costs far less than what it stands in for.

Run: .venv/bin/python bench/instant_upstream.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httptools
import uvloop

REPLY = "I'm sorry to hear you're having trouble! Have you tried plugging it into a different power outlet?"
USAGE = {"prompt_tokens": 40, "completion_tokens": 16, "total_tokens": 56}
BASE = {"id": "housestyle-base", "object": "model", "root": "instant-upstream", "parent": None, "max_model_len": 2048}
LOADED: dict[str, str] = {}  # adapter name -> path, as vLLM's runtime LoRA keeps them


def models() -> bytes:
    adapters = [{"id": name, "object": "model", "root": path, "parent": BASE["id"]} for name, path in LOADED.items()]
    return json.dumps({"object": "list", "data": [BASE, *adapters]}).encode()


def logprobs(tokens: int) -> dict:
    step = {"token": "token_id:7", "logprob": -0.5, "top_logprobs": [{"token": "token_id:7", "logprob": -0.5},
                                                                   {"token": "token_id:9", "logprob": -2.5}]}
    return {"content": [step] * tokens}


def text_completion(model: str, request: dict) -> bytes:
    """/v1/completions: one choice per prompt, with the completions API's log-probs when asked (fingerprint probes)."""
    prompts = request.get("prompt") or [""]
    tokens = int(request.get("max_tokens") or 16)
    choices = []
    for index, _ in enumerate(prompts if isinstance(prompts, list) else [prompts]):
        choice = {"index": index, "text": REPLY[:tokens], "finish_reason": "length"}
        if request.get("logprobs"):
            choice["logprobs"] = {"tokens": ["token_id:7"] * tokens, "token_logprobs": [-0.5] * tokens,
                                  "top_logprobs": [{"token_id:7": -0.5, "token_id:9": -2.5}] * tokens}
        choices.append(choice)
    return json.dumps({"id": "cmpl-instant", "object": "text_completion", "created": int(time.time()),
                       "model": model, "choices": choices, "usage": USAGE}).encode()


def completion(model: str, request: dict) -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "length"}
    if request.get("logprobs"):
        choice["logprobs"] = logprobs(int(request.get("max_tokens") or 16))
    return json.dumps({"id": "chatcmpl-instant", "object": "chat.completion", "created": int(time.time()),
                       "model": model, "choices": [choice], "usage": USAGE}).encode()


def stream(model: str) -> bytes:
    base = {"id": "chatcmpl-instant", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": REPLY}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        {**base, "choices": [], "usage": USAGE},
    ]
    return b"".join(b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks) + b"data: [DONE]\n\n"


class InstantProtocol(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection: each request answered as soon as its body is in."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        path, kind, status = self.url.split(b"?")[0], b"application/json", b"200 OK"
        try:
            request = json.loads(b"".join(self.body)) if self.body else {}
        except ValueError:
            request = {}
        self.body = []
        if path == b"/v1/models":
            answer = models()
        elif path == b"/health":
            answer = b""
        elif path == b"/v1/load_lora_adapter":
            LOADED[str(request.get("lora_name"))] = str(request.get("lora_path"))
            answer, kind = b"ok", b"text/plain"
        elif path == b"/v1/unload_lora_adapter":
            found = LOADED.pop(str(request.get("lora_name")), None) is not None
            missing = b'{"error": {"message": "not loaded"}}', b"404 Not Found"
            answer, status = (b"ok", b"200 OK") if found else missing
        else:
            model = str(request.get("model", "housestyle-base"))
            if model != BASE["id"] and model not in LOADED:
                answer, status = b'{"error": {"message": "model does not exist"}}', b"404 Not Found"
            elif request.get("stream"):
                answer, kind = stream(model), b"text/event-stream"
            elif path == b"/v1/completions":
                answer = text_completion(model, request)
            else:
                answer = completion(model, request)
        self.transport.write(b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s"
                             % (status, kind, len(answer), answer))


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(InstantProtocol, "127.0.0.1", port)
    print(f"instant upstream on http://127.0.0.1:{port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
