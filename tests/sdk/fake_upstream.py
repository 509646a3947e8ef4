"""A fake LLM provider for the translation tests: plays Anthropic on `POST /v1/messages` and OpenAI on
`POST /v1/chat/completions`, whole bodies and SSE streams, the way the real APIs put them on the wire
(protocols.md §1.3-§1.5 and §2.3-§2.5).

The scenario is picked from the text of the LAST user message of the request:

- tool results at the end of the conversation (`tool_result` blocks in the last Anthropic user turn,
  or OpenAI `tool` messages after the last assistant message) -> a text reply quoting every result: "Results: <id>=<content>; ..."
- "midfail"   -> a 200 stream that starts, sends one text piece, then an in-stream error
                 (Anthropic `event: error` overloaded_error / OpenAI `data: {"error": ...}`); as a
                 whole body it answers 500.
- "cutoff"    -> a 200 stream that starts, sends one text piece, then ends (clean end of the HTTP
                 body) without its final events (no message_delta/message_stop, no finish_reason/[DONE]).
- "overload"  -> Anthropic 529 overloaded_error / OpenAI 503 service_unavailable_error.
- "fail"      -> 429 with the provider's rate-limit error body and `retry-after: 7`.
- "two tools" -> two parallel tool calls: get_weather {"city": "Paris"} and get_time
                 {"timezone": "Europe/Paris"}, streamed as argument fragments.
- "weather"   -> one tool call get_weather {"city": "Paris"}, after the text "Let me check."
- "truncate"  -> the text "Hi from <model> and then" cut by the token limit (stop_reason max_tokens /
                 finish_reason length).
- "unicode"   -> the text UNICODE_TEXT; streamed with every SSE event split across two HTTP chunks
                 in the middle of a multi-byte UTF-8 character.
- anything else ("hello") -> the text "Hi from <model>", <model> being the request's `model`.

Every request is recorded (method, path, headers, parsed JSON body) in `FakeUpstream.requests`.
Usage numbers are fixed (ANTHROPIC_USAGE / OPENAI_USAGE) so tests can check how they are mapped.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Anthropic usage: input_tokens is the uncached part only; total prompt = 11 + 200 + 3000 = 3211.
ANTHROPIC_USAGE = {
    "input_tokens": 11,
    "cache_creation_input_tokens": 200,
    "cache_read_input_tokens": 3000,
    "output_tokens": 7,
}
# OpenAI usage: prompt_tokens includes cached_tokens (uncached part = 250).
OPENAI_USAGE = {
    "prompt_tokens": 1250,
    "completion_tokens": 9,
    "total_tokens": 1259,
    "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}

WEATHER_ARGS = {"city": "Paris"}
TIME_ARGS = {"timezone": "Europe/Paris"}
# Argument fragments as a model streams them: concatenated they are the JSON text of the arguments.
WEATHER_FRAGMENTS = ['{"city', '": "Par', 'is"}']
TIME_FRAGMENTS = ['{"timezone": ', '"Europe/', 'Paris"}']
ANTHROPIC_WEATHER_ID = "toolu_01WeatherParis"
ANTHROPIC_TIME_ID = "toolu_02TimeParis"
OPENAI_WEATHER_ID = "call_weather_paris"
OPENAI_TIME_ID = "call_time_paris"

ANTHROPIC_RATE_LIMIT_MESSAGE = "Number of request tokens has exceeded your per-minute rate limit"
OPENAI_RATE_LIMIT_MESSAGE = "Rate limit reached for gpt-4o on requests per min (RPM): Limit 3, Used 3"
ANTHROPIC_MIDSTREAM_MESSAGE = "Overloaded (fake mid-stream)"
OPENAI_MIDSTREAM_MESSAGE = "The server had an error while processing your request (fake mid-stream)"
PARTIAL_TEXT = "Partial answer"
UNICODE_TEXT = "Grüße aus Paris ☀ 東京 👋"
ANTHROPIC_OVERLOAD_MESSAGE = "Overloaded"
OPENAI_OVERLOAD_MESSAGE = "The engine is currently overloaded, please try again later"
SCENARIOS = ("midfail", "cutoff", "overload", "fail", "two tools", "weather", "truncate", "unicode")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _result_text(content: Any) -> str:
    return _text_of(content) if content is not None else ""


def scenario(path: str, body: dict) -> tuple[str, Any]:
    """(name, detail) for a request: detail is the list of (tool id, result text) for "tool_results"."""
    messages = body.get("messages") or []
    if path == "/v1/messages":
        last = messages[-1] if messages else {}
        if last.get("role") == "user" and isinstance(last.get("content"), list):
            results = [
                (b.get("tool_use_id"), _result_text(b.get("content")))
                for b in last["content"]
                if isinstance(b, dict) and b.get("type") == "tool_result"
            ]
            if results:
                return "tool_results", results
        users = [m for m in messages if m.get("role") == "user"]
    else:
        # Tool messages after the last assistant turn (a user text may follow them).
        tail = []
        for m in reversed(messages):
            if m.get("role") == "assistant":
                break
            if m.get("role") == "tool":
                tail.append((m.get("tool_call_id"), _result_text(m.get("content"))))
        if tail:
            return "tool_results", list(reversed(tail))
        users = [m for m in messages if m.get("role") == "user"]
    text = _text_of(users[-1].get("content")).lower() if users else ""
    for name in SCENARIOS:
        if name in text:
            return name, None
    return "hello", None


class Recorded:
    """One request as the fake provider received it."""

    def __init__(self, method: str, path: str, headers: dict[str, str], body: Any):
        self.method = method
        self.path = path
        self.headers = headers  # lower-case names
        self.body = body

    def __repr__(self) -> str:
        return f"Recorded({self.method} {self.path} {json.dumps(self.body)[:300]})"


class FakeUpstream:
    """The fake provider on 127.0.0.1, on a free port, served from a background thread."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._counter = 0
        upstream = self

        class Handler(_Handler):
            fake = upstream

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-upstream", daemon=True)

    def start(self) -> "FakeUpstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def record(self, rec: Recorded) -> int:
        with self._lock:
            self.requests.append(rec)
            self._counter += 1
            return self._counter

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def received(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeUpstream

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    # --- plumbing -----------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)
        self.wfile.flush()

    def _start_sse(self, headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.flush()

    split = False  # "unicode": each event in two HTTP chunks, cut inside a multi-byte character

    def _chunk(self, data: bytes) -> None:
        """One HTTP chunk per SSE event, flushed at once."""
        if self.split and len(data) > 1:
            cut = next((i + 1 for i, b in enumerate(data) if b >= 0xC0), len(data) // 2)
            self._raw_chunk(data[:cut])
            time.sleep(0.01)
            self._raw_chunk(data[cut:])
        else:
            self._raw_chunk(data)
        time.sleep(0.002)

    def _raw_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _event(self, name: str, data: dict) -> None:
        self._chunk(f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode())

    def _data(self, data: Any) -> None:
        payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        self._chunk(f"data: {payload}\n\n".encode())

    def do_GET(self) -> None:  # noqa: N802
        self._json(404, {"error": {"message": f"no GET {self.path}", "type": "invalid_request_error"}})

    def do_POST(self) -> None:  # noqa: N802
        self.split = False  # one handler serves every request of a keep-alive connection
        raw = self._read_body()
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = {"_unparsable": raw.decode(errors="replace")}
        headers = {k.lower(): v for k, v in self.headers.items()}
        n = self.fake.record(Recorded("POST", self.path, headers, body))
        if not isinstance(body, dict):
            self._json(400, {"error": {"message": "body must be an object", "type": "invalid_request_error"}})
            return
        if self.path == "/v1/messages":
            self._anthropic(body, n)
        elif self.path == "/v1/chat/completions":
            self._openai(body, n)
        else:
            self._json(404, {"error": {"message": f"no POST {self.path}", "type": "invalid_request_error"}})

    # --- Anthropic ----------------------------------------------------------------------------

    def _anthropic(self, body: dict, n: int) -> None:
        name, detail = scenario(self.path, body)
        model = body.get("model", "")
        stream = body.get("stream") is True
        request_id = f"req_fake{n:04d}"
        if name in ("fail", "overload") or (name in ("midfail", "cutoff") and not stream):
            status, etype, msg = {
                "fail": (429, "rate_limit_error", ANTHROPIC_RATE_LIMIT_MESSAGE),
                "overload": (529, "overloaded_error", ANTHROPIC_OVERLOAD_MESSAGE),
            }.get(name, (500, "api_error", "Internal server error (fake)"))
            err = {"type": "error", "error": {"type": etype, "message": msg}, "request_id": request_id}
            self._json(status, err, {"request-id": request_id, "retry-after": "7"})
            return

        # Blocks of the reply: ("text", text) or ("tool", id, name, input, fragments).
        if name == "tool_results":
            blocks = [("text", "Results: " + "; ".join(f"{i}={t}" for i, t in detail))]
            stop = "end_turn"
        elif name == "weather":
            blocks = [("text", "Let me check."), ("tool", ANTHROPIC_WEATHER_ID, "get_weather", WEATHER_ARGS, WEATHER_FRAGMENTS)]
            stop = "tool_use"
        elif name == "two tools":
            blocks = [
                ("tool", ANTHROPIC_WEATHER_ID, "get_weather", WEATHER_ARGS, WEATHER_FRAGMENTS),
                ("tool", ANTHROPIC_TIME_ID, "get_time", TIME_ARGS, TIME_FRAGMENTS),
            ]
            stop = "tool_use"
        elif name == "truncate":
            blocks = [("text", f"Hi from {model} and then")]
            stop = "max_tokens"
        elif name == "unicode":
            blocks = [("text", UNICODE_TEXT)]
            stop = "end_turn"
            self.split = True
        else:
            blocks = [("text", f"Hi from {model}")]
            stop = "end_turn"
        msg_id = f"msg_fake{n:04d}"
        served_model = f"{model}-20250929"

        if not stream:
            content = [
                {"type": "text", "text": b[1]}
                if b[0] == "text"
                else {"type": "tool_use", "id": b[1], "name": b[2], "input": b[3]}
                for b in blocks
            ]
            self._json(
                200,
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": served_model,
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": dict(ANTHROPIC_USAGE, cache_creation={"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 0}),
                },
                {"request-id": request_id},
            )
            return

        self._start_sse({"request-id": request_id})
        start_usage = dict(ANTHROPIC_USAGE, output_tokens=1)
        self._event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": served_model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        )
        self._event("ping", {"type": "ping"})
        if name in ("midfail", "cutoff"):
            self._event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
            self._event(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": PARTIAL_TEXT}},
            )
            if name == "midfail":
                self._event(
                    "error",
                    {"type": "error", "error": {"type": "overloaded_error", "message": ANTHROPIC_MIDSTREAM_MESSAGE}, "request_id": request_id},
                )
            self._end_chunks()
            return
        for index, b in enumerate(blocks):
            if b[0] == "text":
                self._event("content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
                words = b[1].split(" ")
                pieces = [w + " " for w in words[:-1]] + [words[-1]]
                for piece in pieces:
                    self._event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}},
                    )
            else:
                _, tid, tname, _args, fragments = b
                self._event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": tid, "name": tname, "input": {}}},
                )
                # The API's first fragment is often empty.
                for piece in ["", *fragments]:
                    self._event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}},
                    )
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
        self._event("ping", {"type": "ping"})
        # Cumulative usage, newer API style: input and cache counts repeated here.
        self._event(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": dict(ANTHROPIC_USAGE)},
        )
        self._event("message_stop", {"type": "message_stop"})
        self._end_chunks()

    # --- OpenAI -------------------------------------------------------------------------------

    def _openai(self, body: dict, n: int) -> None:
        name, detail = scenario(self.path, body)
        model = body.get("model", "")
        stream = body.get("stream") is True
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        request_id = f"req_oa_fake{n:04d}"
        if name in ("fail", "overload") or (name in ("midfail", "cutoff") and not stream):
            if name == "fail":
                status, err = 429, {"message": OPENAI_RATE_LIMIT_MESSAGE, "type": "requests", "param": None, "code": "rate_limit_exceeded"}
            elif name == "overload":
                status, err = 503, {"message": OPENAI_OVERLOAD_MESSAGE, "type": "service_unavailable_error", "param": None, "code": "server_is_overloaded"}
            else:
                status, err = 500, {"message": "fake server error", "type": "server_error", "param": None, "code": None}
            self._json(status, {"error": err}, {"x-request-id": request_id, "retry-after": "7"})
            return

        text = None
        calls: list[tuple[str, str, dict, list[str]]] = []
        if name == "tool_results":
            text = "Results: " + "; ".join(f"{i}={t}" for i, t in detail)
            finish = "stop"
        elif name == "weather":
            text = "Let me check."
            calls = [(OPENAI_WEATHER_ID, "get_weather", WEATHER_ARGS, WEATHER_FRAGMENTS)]
            finish = "tool_calls"
        elif name == "two tools":
            calls = [
                (OPENAI_WEATHER_ID, "get_weather", WEATHER_ARGS, WEATHER_FRAGMENTS),
                (OPENAI_TIME_ID, "get_time", TIME_ARGS, TIME_FRAGMENTS),
            ]
            finish = "tool_calls"
        elif name in ("midfail", "cutoff"):
            text, finish = PARTIAL_TEXT, "stop"
        elif name == "truncate":
            text, finish = f"Hi from {model} and then", "length"
        elif name == "unicode":
            text, finish = UNICODE_TEXT, "stop"
            self.split = True
        else:
            text = f"Hi from {model}"
            finish = "stop"
        cid = f"chatcmpl-fake{n:04d}"
        created = int(time.time())
        served_model = f"{model}-2024-08-06"

        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
            if calls:
                message["tool_calls"] = [
                    {"id": cid_, "type": "function", "function": {"name": fn, "arguments": json.dumps(args)}}
                    for cid_, fn, args, _ in calls
                ]
            self._json(
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": served_model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                    "usage": OPENAI_USAGE,
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                },
                {"x-request-id": request_id},
            )
            return

        def chunk(delta: dict, finish_reason: str | None = None) -> dict:
            c = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": served_model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            }
            if include_usage:
                c["usage"] = None
            return c

        self._start_sse({"x-request-id": request_id})
        self._data(chunk({"role": "assistant", "content": "", "refusal": None}))
        if text:
            words = text.split(" ")
            for piece in [w + " " for w in words[:-1]] + [words[-1]]:
                self._data(chunk({"content": piece}))
        if name == "cutoff":
            self._end_chunks()
            return
        if name == "midfail":
            self._data({"error": {"message": OPENAI_MIDSTREAM_MESSAGE, "type": "server_error", "param": None, "code": None}})
            self._end_chunks()
            return
        for index, (call_id, fn, _args, fragments) in enumerate(calls):
            self._data(
                chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": {"name": fn, "arguments": ""}}]})
            )
            for piece in fragments:
                self._data(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        self._data(chunk({}, finish))
        if include_usage:
            self._data(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": served_model,
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": OPENAI_USAGE,
                }
            )
        self._data("[DONE]")
        self._end_chunks()


if __name__ == "__main__":  # manual poking: python tests/sdk/fake_upstream.py
    up = FakeUpstream().start()
    print(f"fake upstream on {up.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        up.stop()
