"""Cross-dialect translation, end to end, with the official SDKs as clients and a fake provider
(`fake_upstream.py`) as the backend.

- `openai` SDK  -> gateway route `oa-on-claude` -> `POST /v1/messages` on a `kind = "anthropic"` backend
- `anthropic` SDK -> gateway route `an-on-gpt`  -> `POST /v1/chat/completions` on a `kind = "openai"` backend

The gateway is started by the `gateway` fixture (conftest.py) from `$SWITCHYARD_BIN`. Each test checks
both what the SDK parsed (text, tool calls, finish/stop reason, usage, errors) and what the fake
provider received (protocols.md §3).
"""

from __future__ import annotations

import json
import os
import re

import anthropic
import openai
import pytest

import fake_upstream as fu
from conftest import CLAUDE_KEY, DEFAULT_MAX_TOKENS, GPT_KEY
from stream_checks import check_block_indexes

for _name in list(os.environ):
    if _name.startswith(("OPENAI_", "ANTHROPIC_")):
        del os.environ[_name]

OA_ROUTE = "oa-on-claude"
CLAUDE_MODEL = "claude-sonnet-4-5"
AN_ROUTE = "an-on-gpt"
GPT_MODEL = "gpt-4o"
APP_OPENAI_KEY = "sk-app-openai-key"
APP_ANTHROPIC_KEY = "sk-ant-app-key"
MAX_TOKENS = 64

WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name"}},
    "required": ["city"],
}
TIME_PARAMS = {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}
OA_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": WEATHER_PARAMS}},
    {"type": "function", "function": {"name": "get_time", "description": "Local time", "parameters": TIME_PARAMS}},
]
AN_TOOLS = [
    {"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER_PARAMS},
    {"name": "get_time", "description": "Local time", "input_schema": TIME_PARAMS},
]

# Usage the SDKs must show (protocols.md §3.5), from the fake provider's fixed numbers.
A = fu.ANTHROPIC_USAGE
OA_PROMPT = A["input_tokens"] + A["cache_creation_input_tokens"] + A["cache_read_input_tokens"]  # 3211
OA_COMPLETION = A["output_tokens"]
O = fu.OPENAI_USAGE
AN_CACHE_READ = O["prompt_tokens_details"]["cached_tokens"]  # 1000
AN_INPUT = O["prompt_tokens"] - AN_CACHE_READ  # 250
AN_OUTPUT = O["completion_tokens"]


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh(fake_upstream, gateway, request):
    """Each test starts with an empty request log; gateway log lines of a failing test are reported."""
    fake_upstream.clear()
    request.node._gateway_log_mark = len(gateway.log)
    yield


@pytest.fixture()
def oai(gateway):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=APP_OPENAI_KEY, max_retries=0, timeout=20.0)
    yield client
    client.close()


@pytest.fixture()
def ant(gateway):
    client = anthropic.Anthropic(base_url=gateway.url, api_key=APP_ANTHROPIC_KEY, max_retries=0, timeout=20.0)
    yield client
    client.close()


def upstream_request(fake, path: str) -> fu.Recorded:
    """The one request the provider got for this test; it must have gone to `path` only."""
    got = list(fake.requests)
    assert [r.path for r in got] == [path], f"expected exactly one upstream request to {path}, got {got}"
    return got[0]


def check_anthropic_headers(rec: fu.Recorded) -> None:
    h = rec.headers
    assert h.get("x-api-key") == CLAUDE_KEY, h
    assert "authorization" not in h, f"the app's Authorization header reached the Anthropic backend: {h}"
    assert h.get("anthropic-version"), f"no anthropic-version header upstream: {h}"
    assert h.get("content-type", "").startswith("application/json"), h
    leaked = [k for k in h if k.startswith(("x-stainless-", "openai-"))]
    assert not leaked, f"OpenAI SDK vendor headers forwarded to the Anthropic backend: {leaked}"
    assert APP_OPENAI_KEY not in json.dumps(h), "the app's key reached the backend"


def check_openai_headers(rec: fu.Recorded) -> None:
    h = rec.headers
    assert h.get("authorization") == f"Bearer {GPT_KEY}", h
    assert "x-api-key" not in h, h
    leaked = [k for k in h if k.startswith(("x-stainless-", "anthropic-"))]
    assert not leaked, f"Anthropic SDK vendor headers forwarded to the OpenAI backend: {leaked}"
    assert APP_ANTHROPIC_KEY not in json.dumps(h), "the app's key reached the backend"


RAW_ORDER = re.compile(
    r"message_start(?: content_block_start(?: content_block_delta)+ content_block_stop)+ message_delta message_stop"
)
HELPER_ORDER = re.compile(
    r"message_start(?: content_block_start(?: content_block_delta (?:text|input_json))+ content_block_stop)+"
    r" message_delta message_stop"
)


# =============================================================================================
# OpenAI SDK -> Anthropic backend
# =============================================================================================


def test_oa_text_nonstream(oai, fake_upstream) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model=OA_ROUTE, messages=[{"role": "user", "content": "hello there"}]
    )
    assert raw.status_code == 200
    assert raw.headers.get("x-switchyard-backend") == "claude"
    assert raw.headers.get("x-switchyard-model") == CLAUDE_MODEL
    c = raw.parse()
    assert c.object == "chat.completion"
    assert c.id.startswith("chatcmpl-"), c.id
    assert c.model == OA_ROUTE
    assert len(c.choices) == 1
    ch = c.choices[0]
    assert ch.index == 0
    assert ch.message.role == "assistant"
    assert ch.message.content == f"Hi from {CLAUDE_MODEL}"
    assert ch.message.tool_calls is None
    assert ch.finish_reason == "stop"
    # §3.5: prompt = input + cache creation + cache read; cached_tokens = cache read.
    assert c.usage.prompt_tokens == OA_PROMPT
    assert c.usage.completion_tokens == OA_COMPLETION
    assert c.usage.total_tokens == OA_PROMPT + OA_COMPLETION
    assert c.usage.prompt_tokens_details.cached_tokens == A["cache_read_input_tokens"]

    rec = upstream_request(fake_upstream, "/v1/messages")
    check_anthropic_headers(rec)
    assert rec.body["model"] == CLAUDE_MODEL
    # No max_tokens from the app: the route's default_max_tokens (Anthropic requires the field).
    assert rec.body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert rec.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}]
    assert "system" not in rec.body
    assert rec.body.get("stream") in (None, False)
    assert "stream_options" not in rec.body


def test_oa_request_fields_translated(oai, fake_upstream) -> None:
    c = oai.chat.completions.create(
        model=OA_ROUTE,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": ""}]},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "hello again"},
        ],
        max_completion_tokens=50,
        temperature=1.5,
        top_p=0.5,
        stop=["END"],
        user="user-42",
        seed=7,
    )
    assert c.choices[0].message.content == f"Hi from {CLAUDE_MODEL}"

    body = upstream_request(fake_upstream, "/v1/messages").body
    assert body["system"] == [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in English."}]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hello"}]},  # the empty text part is dropped
        {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]},
        {"role": "user", "content": [{"type": "text", "text": "hello again"}]},
    ]
    assert body["max_tokens"] == 50
    assert body["temperature"] == 1.0  # clamped to Anthropic's [0, 1]
    assert "top_p" not in body  # Sonnet 4.5+ rejects temperature with top_p
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "user-42"}
    for dropped in ("seed", "user", "stop", "max_completion_tokens", "n"):
        assert dropped not in body, f"{dropped} sent to the Anthropic backend"


def test_oa_text_stream_with_usage(oai, fake_upstream) -> None:
    chunks = list(
        oai.chat.completions.create(
            model=OA_ROUTE,
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len(chunks) >= 4, chunks
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert {c.model for c in chunks} == {OA_ROUTE}
    assert len({c.created for c in chunks}) == 1

    final, body = chunks[-1], chunks[:-1]
    assert final.choices == [], final
    assert final.usage.prompt_tokens == OA_PROMPT
    assert final.usage.completion_tokens == OA_COMPLETION
    assert final.usage.total_tokens == OA_PROMPT + OA_COMPLETION
    assert final.usage.prompt_tokens_details.cached_tokens == A["cache_read_input_tokens"]
    assert all(c.usage is None for c in body), "usage on a non-final chunk"
    assert all(len(c.choices) == 1 and c.choices[0].index == 0 for c in body)
    assert body[0].choices[0].delta.role == "assistant"
    text_pieces = [c.choices[0].delta.content for c in body if c.choices[0].delta.content]
    assert len(text_pieces) >= 2, f"text was not streamed piece by piece: {text_pieces}"
    assert "".join(text_pieces) == f"Hi from {CLAUDE_MODEL}"
    assert [c.choices[0].finish_reason for c in body if c.choices[0].finish_reason] == ["stop"]
    assert body[-1].choices[0].finish_reason == "stop"

    up = upstream_request(fake_upstream, "/v1/messages").body
    assert up["stream"] is True
    assert "stream_options" not in up
    assert up["max_tokens"] == DEFAULT_MAX_TOKENS


def test_oa_stream_without_include_usage_has_no_usage(oai, fake_upstream) -> None:
    chunks = list(
        oai.chat.completions.create(model=OA_ROUTE, messages=[{"role": "user", "content": "hello"}], stream=True)
    )
    assert chunks, "no chunks"
    assert all(c.usage is None for c in chunks), "usage sent although the app did not ask for it"
    assert all(len(c.choices) == 1 for c in chunks), "a choices-less usage chunk sent although not asked for"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == f"Hi from {CLAUDE_MODEL}"
    assert chunks[-1].choices[0].finish_reason == "stop"
    upstream_request(fake_upstream, "/v1/messages")


def test_oa_stream_helper_text(oai, fake_upstream) -> None:
    deltas = []
    with oai.chat.completions.stream(
        model=OA_ROUTE, messages=[{"role": "user", "content": "hello"}], stream_options={"include_usage": True}
    ) as stream:
        for event in stream:
            if event.type == "content.delta":
                deltas.append(event.delta)
        final = stream.get_final_completion()
    assert "".join(deltas) == f"Hi from {CLAUDE_MODEL}"
    assert final.choices[0].message.content == f"Hi from {CLAUDE_MODEL}"
    assert final.choices[0].finish_reason == "stop"
    assert final.usage.prompt_tokens == OA_PROMPT
    assert final.usage.completion_tokens == OA_COMPLETION
    assert final.usage.prompt_tokens_details.cached_tokens == A["cache_read_input_tokens"]
    assert upstream_request(fake_upstream, "/v1/messages").body["stream"] is True


def test_oa_tool_call_nonstream(oai, fake_upstream) -> None:
    c = oai.chat.completions.create(
        model=OA_ROUTE,
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=OA_TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=100,
    )
    ch = c.choices[0]
    assert ch.finish_reason == "tool_calls"
    assert ch.message.content == "Let me check."
    calls = ch.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].id == fu.ANTHROPIC_WEATHER_ID
    assert calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == fu.WEATHER_ARGS
    assert c.usage.prompt_tokens == OA_PROMPT

    body = upstream_request(fake_upstream, "/v1/messages").body
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER_PARAMS},
        {"name": "get_time", "description": "Local time", "input_schema": TIME_PARAMS},
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["max_tokens"] == 100
    assert "parallel_tool_calls" not in body


def test_oa_two_tools_nonstream(oai, fake_upstream) -> None:
    c = oai.chat.completions.create(
        model=OA_ROUTE, messages=[{"role": "user", "content": "two tools please"}], tools=OA_TOOLS
    )
    ch = c.choices[0]
    assert ch.finish_reason == "tool_calls"
    assert ch.message.content is None  # §3.2: null when there is no text and there are tool calls
    assert [(t.id, t.function.name, json.loads(t.function.arguments)) for t in ch.message.tool_calls] == [
        (fu.ANTHROPIC_WEATHER_ID, "get_weather", fu.WEATHER_ARGS),
        (fu.ANTHROPIC_TIME_ID, "get_time", fu.TIME_ARGS),
    ]
    body = upstream_request(fake_upstream, "/v1/messages").body
    assert "tool_choice" not in body  # none asked for: the backend's default (auto)


def test_oa_tool_call_stream_raw(oai, fake_upstream) -> None:
    chunks = list(
        oai.chat.completions.create(
            model=OA_ROUTE,
            messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=OA_TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    final, body = chunks[-1], chunks[:-1]
    assert final.choices == [] and final.usage.prompt_tokens == OA_PROMPT
    assert final.usage.completion_tokens == OA_COMPLETION
    assert "".join(c.choices[0].delta.content or "" for c in body) == "Let me check."
    frags = [tc for c in body for tc in (c.choices[0].delta.tool_calls or [])]
    assert frags, "no tool-call fragments"
    # The Anthropic block index of the tool is 1 (after the text block); OpenAI wants the ordinal 0.
    assert {f.index for f in frags} == {0}, [f.index for f in frags]
    assert frags[0].id == fu.ANTHROPIC_WEATHER_ID
    assert frags[0].type == "function"
    assert frags[0].function.name == "get_weather"
    assert all(f.id is None and f.function.name is None for f in frags[1:]), "id/name repeated on later fragments"
    args = "".join(f.function.arguments or "" for f in frags)
    assert json.loads(args) == fu.WEATHER_ARGS
    assert len([f for f in frags if f.function.arguments]) >= 2, "arguments were not streamed as fragments"
    assert [c.choices[0].finish_reason for c in body if c.choices[0].finish_reason] == ["tool_calls"]
    up = upstream_request(fake_upstream, "/v1/messages").body
    assert up["stream"] is True and up["tools"][0]["input_schema"] == WEATHER_PARAMS


def test_oa_two_tools_stream_helper(oai, fake_upstream) -> None:
    done_args = []
    with oai.chat.completions.stream(
        model=OA_ROUTE,
        messages=[{"role": "user", "content": "two tools please"}],
        tools=OA_TOOLS,
        stream_options={"include_usage": True},
    ) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.done":
                done_args.append((event.index, event.name, json.loads(event.arguments)))
        final = stream.get_final_completion()
    assert done_args == [(0, "get_weather", fu.WEATHER_ARGS), (1, "get_time", fu.TIME_ARGS)]
    ch = final.choices[0]
    assert ch.finish_reason == "tool_calls"
    assert not ch.message.content
    assert [(t.id, t.function.name, json.loads(t.function.arguments)) for t in ch.message.tool_calls] == [
        (fu.ANTHROPIC_WEATHER_ID, "get_weather", fu.WEATHER_ARGS),
        (fu.ANTHROPIC_TIME_ID, "get_time", fu.TIME_ARGS),
    ]
    assert final.usage.prompt_tokens == OA_PROMPT
    assert final.usage.completion_tokens == OA_COMPLETION
    upstream_request(fake_upstream, "/v1/messages")


def test_oa_multi_turn_with_tool_results(oai, fake_upstream) -> None:
    question = {"role": "user", "content": "two tools: weather and time in Paris"}
    first = oai.chat.completions.create(model=OA_ROUTE, messages=[question], tools=OA_TOOLS)
    calls = first.choices[0].message.tool_calls
    assert [t.id for t in calls] == [fu.ANTHROPIC_WEATHER_ID, fu.ANTHROPIC_TIME_ID]
    fake_upstream.clear()

    assistant = first.choices[0].message.model_dump(exclude_none=True, exclude={"annotations", "audio", "refusal"})
    second = oai.chat.completions.create(
        model=OA_ROUTE,
        tools=OA_TOOLS,
        messages=[
            question,
            assistant,
            {"role": "tool", "tool_call_id": calls[0].id, "content": "Sunny, 21C"},
            {"role": "tool", "tool_call_id": calls[1].id, "content": [{"type": "text", "text": "14:05"}]},
        ],
    )
    ch = second.choices[0]
    assert ch.finish_reason == "stop"
    assert ch.message.content == f"Results: {fu.ANTHROPIC_WEATHER_ID}=Sunny, 21C; {fu.ANTHROPIC_TIME_ID}=14:05"
    assert ch.message.tool_calls is None

    body = upstream_request(fake_upstream, "/v1/messages").body
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": question["content"]}]},
        {
            "role": "assistant",
            "content": [  # no empty text block for the tool-call-only turn
                {"type": "tool_use", "id": fu.ANTHROPIC_WEATHER_ID, "name": "get_weather", "input": fu.WEATHER_ARGS},
                {"type": "tool_use", "id": fu.ANTHROPIC_TIME_ID, "name": "get_time", "input": fu.TIME_ARGS},
            ],
        },
        {
            "role": "user",  # both results together, in one user turn
            "content": [
                {"type": "tool_result", "tool_use_id": fu.ANTHROPIC_WEATHER_ID, "content": "Sunny, 21C"},
                {"type": "tool_result", "tool_use_id": fu.ANTHROPIC_TIME_ID, "content": "14:05"},
            ],
        },
    ]


def test_oa_rate_limit_error(oai, fake_upstream) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model=OA_ROUTE, messages=[{"role": "user", "content": "please fail"}])
    err = info.value
    assert err.status_code == 429
    assert fu.ANTHROPIC_RATE_LIMIT_MESSAGE in err.message
    assert err.code == "rate_limit_exceeded"
    assert isinstance(err.body, dict) and err.body.get("message") == fu.ANTHROPIC_RATE_LIMIT_MESSAGE, err.body
    assert err.response.headers.get("retry-after") == "7"
    assert err.response.headers.get("content-type", "").startswith("application/json")
    upstream_request(fake_upstream, "/v1/messages")  # exactly one attempt


def test_oa_rate_limit_error_on_stream(oai, fake_upstream) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(
            model=OA_ROUTE, messages=[{"role": "user", "content": "fail"}], stream=True, stream_options={"include_usage": True}
        )
    assert info.value.status_code == 429
    assert fu.ANTHROPIC_RATE_LIMIT_MESSAGE in info.value.message
    assert upstream_request(fake_upstream, "/v1/messages").body["stream"] is True


def test_oa_midstream_error(oai, fake_upstream) -> None:
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in oai.chat.completions.create(
            model=OA_ROUTE, messages=[{"role": "user", "content": "midfail"}], stream=True, stream_options={"include_usage": True}
        ):
            received.append(chunk)
    err = info.value
    assert not isinstance(err, openai.APIStatusError), "a 200 stream's error should not carry an HTTP error status"
    assert err.message == fu.ANTHROPIC_MIDSTREAM_MESSAGE
    # overloaded_error (Anthropic 529) -> OpenAI's overload shape (§3.7).
    assert err.body.get("type") == "service_unavailable_error", err.body
    assert err.code == "server_is_overloaded"
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == fu.PARTIAL_TEXT
    assert not any(c.choices and c.choices[0].finish_reason for c in received), "finish_reason before the error"
    upstream_request(fake_upstream, "/v1/messages")


def test_oa_midstream_error_stream_helper(oai, fake_upstream) -> None:
    with pytest.raises(openai.APIError) as info:
        with oai.chat.completions.stream(model=OA_ROUTE, messages=[{"role": "user", "content": "midfail"}]) as stream:
            for _ in stream:
                pass
            stream.get_final_completion()
    assert info.value.message == fu.ANTHROPIC_MIDSTREAM_MESSAGE


# =============================================================================================
# Anthropic SDK -> OpenAI backend
# =============================================================================================


def test_an_text_nonstream(ant, fake_upstream) -> None:
    raw = ant.messages.with_raw_response.create(
        model=AN_ROUTE, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "hello there"}]
    )
    assert raw.status_code == 200
    assert raw.headers.get("x-switchyard-backend") == "gpt"
    assert raw.headers.get("x-switchyard-model") == GPT_MODEL
    m = raw.parse()
    assert m.type == "message"
    assert m.role == "assistant"
    assert m.id.startswith("msg_"), m.id
    assert m.model == AN_ROUTE
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == f"Hi from {GPT_MODEL}"
    assert m.stop_reason == "end_turn"
    assert m.stop_sequence is None
    # §3.5: input_tokens = prompt - cached; cache_read = cached_tokens.
    assert m.usage.input_tokens == AN_INPUT
    assert m.usage.output_tokens == AN_OUTPUT
    assert m.usage.cache_read_input_tokens == AN_CACHE_READ
    assert m.usage.cache_creation_input_tokens == 0

    rec = upstream_request(fake_upstream, "/v1/chat/completions")
    check_openai_headers(rec)
    assert rec.body == {
        "model": GPT_MODEL,
        "messages": [{"role": "user", "content": "hello there"}],
        "max_completion_tokens": MAX_TOKENS,
    }


def test_an_request_fields_translated(ant, fake_upstream) -> None:
    m = ant.messages.create(
        model=AN_ROUTE,
        max_tokens=77,
        system=[{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in English."}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "hello again"},
        ],
        stop_sequences=["END"],
        metadata={"user_id": "user-42"},
        # anthropic 2.13's create() has no sampling parameters any more; the API still takes them.
        extra_body={"temperature": 0.3, "top_k": 5},
    )
    assert m.content[0].text == f"Hi from {GPT_MODEL}"
    body = upstream_request(fake_upstream, "/v1/chat/completions").body
    assert body == {
        "model": GPT_MODEL,
        "messages": [
            {"role": "system", "content": "You are terse.\n\nAnswer in English."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "hello again"},
        ],
        "max_completion_tokens": 77,
        "temperature": 0.3,
        "stop": ["END"],
        "user": "user-42",
    }


def test_an_raw_stream_text(ant, fake_upstream) -> None:
    events = list(
        ant.messages.create(model=AN_ROUTE, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "hello"}], stream=True)
    )
    types = " ".join(ev.type for ev in events)
    assert RAW_ORDER.fullmatch(types), f"unexpected event order: {types}"
    check_block_indexes(events)
    start = events[0].message
    assert start.role == "assistant" and start.content == [] and start.stop_reason is None
    assert start.id.startswith("msg_") and start.model == AN_ROUTE
    assert events[1].content_block.type == "text"
    text = [ev.delta.text for ev in events if ev.type == "content_block_delta"]
    assert len(text) >= 2, f"text was not streamed piece by piece: {text}"
    assert "".join(text) == f"Hi from {GPT_MODEL}"
    delta = events[-2]
    assert delta.delta.stop_reason == "end_turn"
    assert delta.delta.stop_sequence is None
    assert delta.usage.output_tokens == AN_OUTPUT
    assert delta.usage.input_tokens == AN_INPUT
    assert delta.usage.cache_read_input_tokens == AN_CACHE_READ

    body = upstream_request(fake_upstream, "/v1/chat/completions").body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}  # forced so usage arrives


def test_an_stream_helper_text(ant, fake_upstream) -> None:
    with ant.messages.stream(model=AN_ROUTE, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "hello"}]) as s:
        events = list(s)
        final = s.get_final_message()
    types = " ".join(ev.type for ev in events)
    assert HELPER_ORDER.fullmatch(types), f"unexpected event order: {types}"
    snapshots = [ev.snapshot for ev in events if ev.type == "text"]
    assert snapshots[-1] == f"Hi from {GPT_MODEL}"
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == f"Hi from {GPT_MODEL}"
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == AN_INPUT
    assert final.usage.output_tokens == AN_OUTPUT
    assert final.usage.cache_read_input_tokens == AN_CACHE_READ
    upstream_request(fake_upstream, "/v1/chat/completions")


def test_an_tool_call_nonstream(ant, fake_upstream) -> None:
    m = ant.messages.create(
        model=AN_ROUTE,
        max_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=AN_TOOLS,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert m.stop_reason == "tool_use"
    assert [b.type for b in m.content] == ["text", "tool_use"]
    assert m.content[0].text == "Let me check."
    tool = m.content[1]
    assert tool.id == fu.OPENAI_WEATHER_ID
    assert tool.name == "get_weather"
    assert tool.input == fu.WEATHER_ARGS
    assert m.usage.input_tokens == AN_INPUT

    body = upstream_request(fake_upstream, "/v1/chat/completions").body
    assert body["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": WEATHER_PARAMS}},
        {"type": "function", "function": {"name": "get_time", "description": "Local time", "parameters": TIME_PARAMS}},
    ]
    assert body["tool_choice"] == "required"
    assert body["parallel_tool_calls"] is False


def test_an_two_tools_nonstream(ant, fake_upstream) -> None:
    m = ant.messages.create(
        model=AN_ROUTE, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "two tools please"}], tools=AN_TOOLS
    )
    assert m.stop_reason == "tool_use"
    assert [(b.type, b.id, b.name, b.input) for b in m.content] == [
        ("tool_use", fu.OPENAI_WEATHER_ID, "get_weather", fu.WEATHER_ARGS),
        ("tool_use", fu.OPENAI_TIME_ID, "get_time", fu.TIME_ARGS),
    ]
    body = upstream_request(fake_upstream, "/v1/chat/completions").body
    assert "tool_choice" not in body and "parallel_tool_calls" not in body


def test_an_tool_call_stream_raw(ant, fake_upstream) -> None:
    events = list(
        ant.messages.create(
            model=AN_ROUTE,
            max_tokens=MAX_TOKENS,
            messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=AN_TOOLS,
            stream=True,
        )
    )
    types = " ".join(ev.type for ev in events)
    assert RAW_ORDER.fullmatch(types), f"unexpected event order: {types}"
    check_block_indexes(events)
    starts = [ev for ev in events if ev.type == "content_block_start"]
    assert [s.content_block.type for s in starts] == ["text", "tool_use"]
    tool = starts[1].content_block
    assert (tool.id, tool.name, tool.input) == (fu.OPENAI_WEATHER_ID, "get_weather", {})
    text = "".join(ev.delta.text for ev in events if ev.type == "content_block_delta" and ev.delta.type == "text_delta")
    assert text == "Let me check."
    frags = [ev for ev in events if ev.type == "content_block_delta" and ev.delta.type == "input_json_delta"]
    assert all(f.index == 1 for f in frags)
    assert len(frags) >= 2, "arguments were not streamed as fragments"
    assert json.loads("".join(f.delta.partial_json for f in frags)) == fu.WEATHER_ARGS
    assert events[-2].delta.stop_reason == "tool_use"
    assert events[-2].usage.output_tokens == AN_OUTPUT
    assert events[-2].usage.input_tokens == AN_INPUT


def test_an_two_tools_stream_helper(ant, fake_upstream) -> None:
    with ant.messages.stream(
        model=AN_ROUTE, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "two tools please"}], tools=AN_TOOLS
    ) as s:
        events = list(s)
        final = s.get_final_message()
    types = " ".join(ev.type for ev in events)
    assert HELPER_ORDER.fullmatch(types), f"unexpected event order: {types}"
    check_block_indexes(events)
    stops = [ev.content_block for ev in events if ev.type == "content_block_stop"]
    assert [(b.id, b.input) for b in stops] == [(fu.OPENAI_WEATHER_ID, fu.WEATHER_ARGS), (fu.OPENAI_TIME_ID, fu.TIME_ARGS)]
    assert final.stop_reason == "tool_use"
    assert [(b.type, b.id, b.name, b.input) for b in final.content] == [
        ("tool_use", fu.OPENAI_WEATHER_ID, "get_weather", fu.WEATHER_ARGS),
        ("tool_use", fu.OPENAI_TIME_ID, "get_time", fu.TIME_ARGS),
    ]
    assert final.usage.input_tokens == AN_INPUT
    assert final.usage.output_tokens == AN_OUTPUT
    assert final.usage.cache_read_input_tokens == AN_CACHE_READ
    body = upstream_request(fake_upstream, "/v1/chat/completions").body
    assert body["stream_options"] == {"include_usage": True}


def test_an_multi_turn_with_tool_results(ant, fake_upstream) -> None:
    question = {"role": "user", "content": "two tools: weather and time in Paris"}
    first = ant.messages.create(model=AN_ROUTE, max_tokens=MAX_TOKENS, messages=[question], tools=AN_TOOLS)
    assert [b.id for b in first.content] == [fu.OPENAI_WEATHER_ID, fu.OPENAI_TIME_ID]
    fake_upstream.clear()

    second = ant.messages.create(
        model=AN_ROUTE,
        max_tokens=MAX_TOKENS,
        tools=AN_TOOLS,
        messages=[
            question,
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": fu.OPENAI_WEATHER_ID, "content": "Sunny, 21C"},
                    {
                        "type": "tool_result",
                        "tool_use_id": fu.OPENAI_TIME_ID,
                        "content": [{"type": "text", "text": "clock unavailable"}],
                        "is_error": True,
                    },
                    {"type": "text", "text": "Summarise please."},
                ],
            },
        ],
    )
    assert second.stop_reason == "end_turn"
    assert [b.type for b in second.content] == ["text"]
    assert second.content[0].text == (
        f"Results: {fu.OPENAI_WEATHER_ID}=Sunny, 21C; {fu.OPENAI_TIME_ID}=Error: clock unavailable"
    )

    body = upstream_request(fake_upstream, "/v1/chat/completions").body
    assert body["messages"] == [
        {"role": "user", "content": question["content"]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": fu.OPENAI_WEATHER_ID, "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(fu.WEATHER_ARGS, separators=(",", ":"))}},
                {"id": fu.OPENAI_TIME_ID, "type": "function", "function": {"name": "get_time", "arguments": json.dumps(fu.TIME_ARGS, separators=(",", ":"))}},
            ],
        },
        # tool messages first, then the rest of the user turn
        {"role": "tool", "tool_call_id": fu.OPENAI_WEATHER_ID, "content": "Sunny, 21C"},
        {"role": "tool", "tool_call_id": fu.OPENAI_TIME_ID, "content": "Error: clock unavailable"},
        {"role": "user", "content": "Summarise please."},
    ]


def test_an_rate_limit_error(ant, fake_upstream) -> None:
    with pytest.raises(anthropic.RateLimitError) as info:
        ant.messages.create(model=AN_ROUTE, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "please fail"}])
    err = info.value
    assert err.status_code == 429
    assert isinstance(err.body, dict) and err.body.get("type") == "error", err.body
    assert err.body["error"] == {"type": "rate_limit_error", "message": fu.OPENAI_RATE_LIMIT_MESSAGE}
    assert err.response.headers.get("retry-after") == "7"
    upstream_request(fake_upstream, "/v1/chat/completions")  # exactly one attempt


def test_an_rate_limit_error_on_stream(ant, fake_upstream) -> None:
    with pytest.raises(anthropic.RateLimitError) as info:
        with ant.messages.stream(model=AN_ROUTE, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "fail"}]) as s:
            s.get_final_message()
    assert info.value.status_code == 429
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert upstream_request(fake_upstream, "/v1/chat/completions").body["stream"] is True


def test_an_midstream_error(ant, fake_upstream) -> None:
    received = []
    with pytest.raises(anthropic.APIStatusError) as info:
        for ev in ant.messages.create(
            model=AN_ROUTE, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "midfail"}], stream=True
        ):
            received.append(ev)
    err = info.value
    assert isinstance(err, anthropic.APIError)
    assert err.body == {"type": "error", "error": {"type": "api_error", "message": fu.OPENAI_MIDSTREAM_MESSAGE}}
    assert fu.OPENAI_MIDSTREAM_MESSAGE in str(err)
    types = [ev.type for ev in received]
    assert types[0] == "message_start"
    assert "message_delta" not in types and "message_stop" not in types, f"a fake end before the error: {types}"
    text = "".join(ev.delta.text for ev in received if ev.type == "content_block_delta")
    assert text == fu.PARTIAL_TEXT
    upstream_request(fake_upstream, "/v1/chat/completions")


def test_an_midstream_error_stream_helper(ant, fake_upstream) -> None:
    with pytest.raises(anthropic.APIStatusError) as info:
        with ant.messages.stream(model=AN_ROUTE, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "midfail"}]) as s:
            s.get_final_message()
    assert info.value.body["error"]["message"] == fu.OPENAI_MIDSTREAM_MESSAGE


# =============================================================================================
# More finish reasons, errors and edge cases, both directions
# =============================================================================================


def test_oa_length_finish(oai, fake_upstream) -> None:
    c = oai.chat.completions.create(model=OA_ROUTE, messages=[{"role": "user", "content": "truncate"}], max_tokens=5)
    assert c.choices[0].finish_reason == "length"  # Anthropic max_tokens
    assert c.choices[0].message.content == f"Hi from {CLAUDE_MODEL} and then"
    chunks = list(oai.chat.completions.create(model=OA_ROUTE, messages=[{"role": "user", "content": "truncate"}], stream=True))
    assert [x.choices[0].finish_reason for x in chunks if x.choices and x.choices[0].finish_reason] == ["length"]
    assert [r.body["max_tokens"] for r in fake_upstream.requests] == [5, DEFAULT_MAX_TOKENS]


def test_an_max_tokens_stop(ant, fake_upstream) -> None:
    m = ant.messages.create(model=AN_ROUTE, max_tokens=5, messages=[{"role": "user", "content": "truncate"}])
    assert m.stop_reason == "max_tokens"  # OpenAI length
    assert m.content[0].text == f"Hi from {GPT_MODEL} and then"
    with ant.messages.stream(model=AN_ROUTE, max_tokens=5, messages=[{"role": "user", "content": "truncate"}]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert final.content[0].text == f"Hi from {GPT_MODEL} and then"
    assert [r.body["max_completion_tokens"] for r in fake_upstream.requests] == [5, 5]


def test_oa_overloaded_error(oai, fake_upstream) -> None:
    # Anthropic 529 overloaded_error -> 503 service_unavailable_error (§3.7).
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(model=OA_ROUTE, messages=[{"role": "user", "content": "overload"}])
    err = info.value
    assert err.status_code == 503
    assert err.code == "server_is_overloaded"
    assert err.body.get("type") == "service_unavailable_error", err.body
    assert fu.ANTHROPIC_OVERLOAD_MESSAGE in err.message
    upstream_request(fake_upstream, "/v1/messages")


def test_an_overloaded_error(ant, fake_upstream) -> None:
    # OpenAI 503 -> 529 overloaded_error (§3.7).
    with pytest.raises(anthropic.OverloadedError) as info:
        ant.messages.create(model=AN_ROUTE, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "overload"}])
    err = info.value
    assert err.status_code == 529
    assert err.body == {"type": "error", "error": {"type": "overloaded_error", "message": fu.OPENAI_OVERLOAD_MESSAGE}}
    upstream_request(fake_upstream, "/v1/chat/completions")


def test_oa_stream_cut_short_is_an_error(oai, fake_upstream) -> None:
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in oai.chat.completions.create(
            model=OA_ROUTE, messages=[{"role": "user", "content": "cutoff"}], stream=True, stream_options={"include_usage": True}
        ):
            received.append(chunk)
    assert "ended early" in info.value.message, info.value.message
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == fu.PARTIAL_TEXT
    assert not any(c.choices and c.choices[0].finish_reason for c in received), "a fake finish_reason"
    assert all(c.usage is None for c in received), "a usage chunk for a cut-short stream"


def test_an_stream_cut_short_is_an_error(ant, fake_upstream) -> None:
    received = []
    with pytest.raises(anthropic.APIStatusError) as info:
        for ev in ant.messages.create(
            model=AN_ROUTE, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "cutoff"}], stream=True
        ):
            received.append(ev)
    assert info.value.body["error"]["type"] == "api_error", info.value.body
    assert "ended early" in info.value.body["error"]["message"]
    types = [ev.type for ev in received]
    assert "message_stop" not in types and "message_delta" not in types, f"a fake end: {types}"
    assert "".join(ev.delta.text for ev in received if ev.type == "content_block_delta") == fu.PARTIAL_TEXT


def test_oa_unicode_split_across_chunks(oai, fake_upstream) -> None:
    c = oai.chat.completions.create(model=OA_ROUTE, messages=[{"role": "user", "content": "unicode"}])
    assert c.choices[0].message.content == fu.UNICODE_TEXT
    chunks = list(oai.chat.completions.create(model=OA_ROUTE, messages=[{"role": "user", "content": "unicode"}], stream=True))
    assert "".join(x.choices[0].delta.content or "" for x in chunks) == fu.UNICODE_TEXT
    assert "\ufffd" not in "".join(x.choices[0].delta.content or "" for x in chunks)


def test_an_unicode_split_across_chunks(ant, fake_upstream) -> None:
    m = ant.messages.create(model=AN_ROUTE, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "unicode"}])
    assert m.content[0].text == fu.UNICODE_TEXT
    with ant.messages.stream(model=AN_ROUTE, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "unicode"}]) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert "".join(pieces) == fu.UNICODE_TEXT
    assert final.content[0].text == fu.UNICODE_TEXT


PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def test_oa_images_and_tool_ids_translated(oai, fake_upstream) -> None:
    c = oai.chat.completions.create(
        model=OA_ROUTE,
        messages=[
            {"role": "user", "content": "look"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "call:1.a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "call:1.a", "content": "Sunny"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hello, what is in these?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            },
        ],
        tools=OA_TOOLS,
    )
    # The tool result and the user text share the last Anthropic user turn, so the fake answers
    # with the results, quoting the (cleaned) id it received.
    assert c.choices[0].message.content == "Results: call_1_a=Sunny"
    body = upstream_request(fake_upstream, "/v1/messages").body
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "look"}]},
        # "content": "" dropped; the id cleaned to Anthropic's [a-zA-Z0-9_-]
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1_a", "name": "get_weather", "input": {"city": "Paris"}}]},
        {
            "role": "user",  # the tool result and the next user message merged, the result first
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1_a", "content": "Sunny"},
                {"type": "text", "text": "hello, what is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ],
        },
    ]


def test_an_images_translated(ant, fake_upstream) -> None:
    m = ant.messages.create(
        model=AN_ROUTE,
        max_tokens=MAX_TOKENS,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hello, what is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
    )
    assert m.content[0].text == f"Hi from {GPT_MODEL}"
    body = upstream_request(fake_upstream, "/v1/chat/completions").body
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hello, what is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


def test_oa_request_id(oai, fake_upstream) -> None:
    raw = oai.chat.completions.with_raw_response.create(model=OA_ROUTE, messages=[{"role": "user", "content": "hello"}])
    rid = raw.headers.get("x-request-id")
    assert rid and raw.parse()._request_id == rid
    assert upstream_request(fake_upstream, "/v1/messages").headers.get("x-request-id") == rid  # propagated upstream


def test_an_request_id(ant, fake_upstream) -> None:
    raw = ant.messages.with_raw_response.create(
        model=AN_ROUTE, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "hello"}]
    )
    rid = raw.headers.get("x-request-id")
    assert rid
    assert raw.parse()._request_id == rid


def test_oa_untranslatable_fields_rejected_before_upstream(oai, fake_upstream) -> None:
    for kwargs, param in (({"n": 2}, "n"), ({"logprobs": True}, "logprobs")):
        with pytest.raises(openai.BadRequestError) as info:
            oai.chat.completions.create(model=OA_ROUTE, messages=[{"role": "user", "content": "hello"}], **kwargs)
        assert info.value.status_code == 400
        assert info.value.param == param, info.value.body
        assert info.value.type == "invalid_request_error"
    assert fake_upstream.requests == [], "an untranslatable request reached the backend"


def test_an_server_tool_rejected_before_upstream(ant, fake_upstream) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        ant.messages.create(
            model=AN_ROUTE,
            max_tokens=MAX_TOKENS,
            messages=[{"role": "user", "content": "hello"}],
            tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],
        )
    assert info.value.status_code == 400
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "invalid_request_error"
    assert fake_upstream.requests == [], "an untranslatable request reached the backend"


def test_named_tool_choice_translated_both_ways(oai, ant, fake_upstream) -> None:
    oai.chat.completions.create(
        model=OA_ROUTE,
        messages=[{"role": "user", "content": "weather?"}],
        tools=OA_TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    ant.messages.create(
        model=AN_ROUTE,
        max_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": "weather?"}],
        tools=AN_TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    to_claude, to_gpt = fake_upstream.requests
    assert to_claude.path == "/v1/messages" and to_gpt.path == "/v1/chat/completions"
    assert to_claude.body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert to_gpt.body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert "parallel_tool_calls" not in to_gpt.body
