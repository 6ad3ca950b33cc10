"""An OpenAI-shaped chat server that answers at once, for measuring the plugin's own cost (`plugin_load.py
--instant-upstream`): with no model behind it, what the plugin adds is all the time and CPU there is to see.

It answers GET /health, GET /v1/models (one base model) and POST /v1/chat/completions (the same short reply, as
one JSON body or, with "stream": true, as server-sent events with a usage chunk and [DONE]). Raw asyncio and
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
MODELS = json.dumps({"object": "list", "data": [
    {"id": "housestyle-base", "object": "model", "root": "instant-upstream", "parent": None, "max_model_len": 2048},
]}).encode()


def completion(model: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-instant", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "length"}],
        "usage": USAGE,
    }).encode()


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
        path, kind = self.url.split(b"?")[0], b"application/json"
        if path == b"/v1/models":
            answer = MODELS
        elif path == b"/health":
            answer = b""
        else:
            try:
                request = json.loads(b"".join(self.body))
            except ValueError:
                request = {}
            model = str(request.get("model", "housestyle-base"))
            if request.get("stream"):
                answer, kind = stream(model), b"text/event-stream"
            else:
                answer = completion(model)
        self.body = []
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s"
                             % (kind, len(answer), answer))


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(InstantProtocol, "127.0.0.1", port)
    print(f"instant upstream on http://127.0.0.1:{port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
