"""End-to-end tests of Switchyard driven by the official `openai` and `anthropic` Python SDKs.

The gateway must already be running on the demo config (`config/demo.toml`, mock backends only);
its base URL (scheme, host and port, no path) comes from the env var `SWITCHYARD_URL`.
`cargo test --test sdk` starts the gateway and runs this file; by hand:

    target/debug/switchyard --config config/demo.toml --listen 127.0.0.1:8080 &
    SWITCHYARD_URL=http://127.0.0.1:8080 .venv/bin/python -m pytest -q tests/sdk
"""

import os
import re

import anthropic
import openai
import pytest
from stream_checks import check_block_indexes

# Env vars such as OPENAI_BASE_URL, ANTHROPIC_BASE_URL, ANTHROPIC_AUTH_TOKEN or ANTHROPIC_PROFILE
# would silently redirect or re-authenticate the clients: drop them all before building any client.
for _name in list(os.environ):
    if _name.startswith(("OPENAI_", "ANTHROPIC_")):
        del os.environ[_name]

OPENAI_MODEL = "summarizer"  # OpenAI-dialect route; control variant is mock-legacy / llama3
ANTHROPIC_MODEL = "assistant"  # Anthropic-dialect route; mock-claude / claude-haiku-4-5
OPENAI_GREETING = "Hello from llama3"
ANTHROPIC_GREETING = "Hello from claude-haiku-4-5"
MESSAGES = [{"role": "user", "content": "Say hello."}]
MAX_TOKENS = 64  # small: the Anthropic SDK refuses non-stream calls with a huge max_tokens


@pytest.fixture(scope="session")
def base_url() -> str:
    url = os.environ.get("SWITCHYARD_URL", "").rstrip("/")
    if not url:
        pytest.fail("SWITCHYARD_URL is not set (expected e.g. http://127.0.0.1:8080)")
    return url


@pytest.fixture()
def oai(base_url: str) -> openai.OpenAI:
    # The OpenAI SDK appends `chat/completions`, `models`: the base must end in /v1.
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-switchyard-test", max_retries=0, timeout=20.0)
    yield client
    client.close()


@pytest.fixture()
def ant(base_url: str) -> anthropic.Anthropic:
    # The Anthropic SDK posts to /v1/messages itself: the base must NOT include /v1.
    client = anthropic.Anthropic(base_url=base_url, api_key="sk-ant-switchyard-test", max_retries=0, timeout=20.0)
    yield client
    client.close()


# ---------------------------------------------------------------------------------------------
# OpenAI SDK
# ---------------------------------------------------------------------------------------------


def openai_nonstream(oai: openai.OpenAI):
    return oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)


def test_openai_nonstream(oai: openai.OpenAI) -> None:
    raw = oai.chat.completions.with_raw_response.create(model=OPENAI_MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
    assert raw.status_code == 200
    variant = raw.headers.get("x-switchyard-variant")
    assert variant, f"no x-switchyard-variant header in {dict(raw.headers)}"
    assert raw.headers.get("x-switchyard-backend"), "no x-switchyard-backend header"
    served_model = raw.headers.get("x-switchyard-model")
    assert served_model, "no x-switchyard-model header"
    request_id = raw.headers.get("x-request-id")
    assert request_id and request_id.strip(), "no x-request-id header"

    completion = raw.parse()
    # The SDK exposes the x-request-id header as `_request_id`.
    assert completion._request_id == request_id
    assert completion.object == "chat.completion"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    content = choice.message.content
    assert isinstance(content, str) and content.strip(), f"empty content: {content!r}"
    assert OPENAI_GREETING in content, content
    assert f"Hello from {served_model}" in content, (served_model, content)
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_openai_stream_with_usage(oai: openai.OpenAI) -> None:
    expected = openai_nonstream(oai).choices[0].message.content

    chunks = list(
        oai.chat.completions.create(
            model=OPENAI_MODEL,
            messages=MESSAGES,
            max_tokens=MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len(chunks) >= 3, f"too few chunks: {chunks}"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1, "chunk ids differ within one stream"

    # With include_usage the last chunk carries usage and no choices; every other chunk has no usage.
    final = chunks[-1]
    assert final.choices == [], f"final chunk has choices: {final}"
    assert final.usage is not None, "no usage on the final chunk"
    assert final.usage.prompt_tokens > 0
    assert final.usage.completion_tokens > 0
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens
    body = chunks[:-1]
    assert all(c.usage is None for c in body), "usage on a non-final chunk"
    assert all(len(c.choices) == 1 and c.choices[0].index == 0 for c in body)

    text = "".join(c.choices[0].delta.content or "" for c in body)
    assert text == expected
    finish = [c.choices[0].finish_reason for c in body if c.choices[0].finish_reason is not None]
    assert finish == ["stop"], f"finish reasons: {finish}"
    # finish_reason arrives on the last choice-bearing chunk.
    assert body[-1].choices[0].finish_reason == "stop"


def test_openai_stream_helper(oai: openai.OpenAI) -> None:
    expected = openai_nonstream(oai).choices[0].message.content

    deltas = []
    with oai.chat.completions.stream(
        model=OPENAI_MODEL,
        messages=MESSAGES,
        max_tokens=MAX_TOKENS,
        stream_options={"include_usage": True},
    ) as stream:
        for event in stream:
            if event.type == "content.delta":
                deltas.append(event.delta)
        final = stream.get_final_completion()

    assert "".join(deltas) == expected
    assert len(final.choices) == 1
    assert final.choices[0].message.content == expected
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None
    assert final.usage.prompt_tokens > 0
    assert final.usage.completion_tokens > 0


def test_openai_unknown_model(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="no-such-model", messages=MESSAGES, max_tokens=MAX_TOKENS)
    assert info.value.status_code == 404
    assert "no-such-model" in info.value.message
    assert info.value.response.headers.get("x-request-id"), "error response has no x-request-id"


def test_openai_models_list(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert "summarizer" in ids, ids
    assert "assistant" in ids, ids


# ---------------------------------------------------------------------------------------------
# Anthropic SDK
# ---------------------------------------------------------------------------------------------


def anthropic_nonstream(ant: anthropic.Anthropic):
    return ant.messages.create(model=ANTHROPIC_MODEL, max_tokens=MAX_TOKENS, messages=MESSAGES)


def test_anthropic_nonstream(ant: anthropic.Anthropic) -> None:
    raw = ant.messages.with_raw_response.create(model=ANTHROPIC_MODEL, max_tokens=MAX_TOKENS, messages=MESSAGES)
    assert raw.status_code == 200
    assert raw.headers.get("x-switchyard-variant"), f"no x-switchyard-variant header in {dict(raw.headers)}"
    assert raw.headers.get("x-request-id"), "no x-request-id header"
    served_model = raw.headers.get("x-switchyard-model")
    assert served_model, "no x-switchyard-model header"

    message = raw.parse()
    assert message.type == "message"
    assert message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    text = message.content[0].text
    assert ANTHROPIC_GREETING in text, text
    assert f"Hello from {served_model}" in text, (served_model, text)
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0


# Strict shape of a text-only Anthropic stream as the raw SSE events (pings are dropped by the SDK).
RAW_ORDER = re.compile(
    r"message_start"
    r"(?: content_block_start(?: content_block_delta)+ content_block_stop)+"
    r" message_delta message_stop"
)
# The same through `messages.stream(...)`: each text delta is followed by the SDK's `text` helper event.
HELPER_ORDER = re.compile(
    r"message_start"
    r"(?: content_block_start(?: content_block_delta text)+ content_block_stop)+"
    r" message_delta message_stop"
)


def test_anthropic_messages_stream_helper(ant: anthropic.Anthropic) -> None:
    expected = anthropic_nonstream(ant).content[0].text

    # 1. text_stream + get_final_message().
    with ant.messages.stream(model=ANTHROPIC_MODEL, max_tokens=MAX_TOKENS, messages=MESSAGES) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 2, f"text arrived in {len(pieces)} piece(s): {pieces}"
    assert "".join(pieces) == expected
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == expected
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0
    assert final.usage.output_tokens > 0

    # 2. Every event the helper yields, in strict order.
    with ant.messages.stream(model=ANTHROPIC_MODEL, max_tokens=MAX_TOKENS, messages=MESSAGES) as stream:
        events = list(stream)
        final2 = stream.get_final_message()
    types = " ".join(ev.type for ev in events)
    assert HELPER_ORDER.fullmatch(types), f"unexpected event order: {types}"
    check_block_indexes(events)
    # Each `text` helper event carries the block's text so far; the last one is the whole text.
    snapshots = [ev.snapshot for ev in events if ev.type == "text"]
    assert snapshots[-1] == expected
    assert all(b.startswith(a) for a, b in zip(snapshots, snapshots[1:])), snapshots
    assert events[-1].message.content[0].text == expected  # message_stop carries the snapshot
    assert final2.content[0].text == expected
    assert final2.stop_reason == "end_turn"


def test_anthropic_raw_stream_events(ant: anthropic.Anthropic) -> None:
    expected = anthropic_nonstream(ant).content[0].text

    events = list(ant.messages.create(model=ANTHROPIC_MODEL, max_tokens=MAX_TOKENS, messages=MESSAGES, stream=True))
    types = " ".join(ev.type for ev in events)
    assert RAW_ORDER.fullmatch(types), f"unexpected event order: {types}"
    check_block_indexes(events)

    start = events[0]
    assert start.message.role == "assistant"
    assert start.message.content == []
    assert start.message.usage.input_tokens > 0

    text = "".join(
        ev.delta.text for ev in events if ev.type == "content_block_delta" and ev.delta.type == "text_delta"
    )
    assert text == expected

    delta = events[-2]
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens > 0


def test_anthropic_unknown_model(ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        ant.messages.create(model="no-such-model", max_tokens=MAX_TOKENS, messages=MESSAGES)
    assert info.value.status_code == 404
    body = info.value.body
    assert isinstance(body, dict) and body.get("type") == "error", body
    assert body["error"]["type"] == "not_found_error", body
    assert info.value.response.headers.get("x-request-id"), "error response has no x-request-id"
