"""Fixtures for the translation tests (`test_translation.py`): a fake provider (`fake_upstream.py`)
and a Switchyard gateway of its own, started from `$SWITCHYARD_BIN` on a config whose backends point
at the fake provider. `test_sdks.py` does not use them (it talks to `$SWITCHYARD_URL`).

By hand:

    cargo build && SWITCHYARD_BIN=target/debug/switchyard SWITCHYARD_URL=... .venv/bin/python -m pytest -q tests/sdk
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_upstream import FakeUpstream  # noqa: E402

STARTUP_TIMEOUT = 30.0
# Backend keys the gateway reads from its environment (`api_key_env`) and must send upstream in
# place of the caller's key.
CLAUDE_KEY = "sk-ant-backend-claude-0001"
GPT_KEY = "sk-backend-gpt-0002"
# Used when an OpenAI-dialect app sends no max_tokens to the Anthropic backend.
DEFAULT_MAX_TOKENS = 333

CONFIG = """\
[backends.claude]
kind = "anthropic"
base_url = "{url}"
api_key_env = "SWITCHYARD_TEST_CLAUDE_KEY"

[backends.gpt]
kind = "openai"
base_url = "{url}"
api_key_env = "SWITCHYARD_TEST_GPT_KEY"

# OpenAI SDK -> Anthropic backend
[[routes]]
model = "oa-on-claude"
control = {{ backend = "claude", model = "claude-sonnet-4-5" }}
default_max_tokens = {max_tokens}

# Anthropic SDK -> OpenAI backend
[[routes]]
model = "an-on-gpt"
control = {{ backend = "gpt", model = "gpt-4o" }}
"""

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ADDR = re.compile(r"addr=\"?(127\.0\.0\.1:\d+)")


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen
    log: list[str] = field(default_factory=list)

    def log_since(self, mark: int) -> str:
        return "\n".join(self.log[mark:])


@pytest.fixture(scope="session")
def fake_upstream():
    up = FakeUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="session")
def gateway(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory):
    binary = os.environ.get("SWITCHYARD_BIN", "")
    if not binary:
        pytest.fail("SWITCHYARD_BIN is not set (the path of the switchyard binary, e.g. target/debug/switchyard)")
    binary = os.path.abspath(binary)  # the gateway runs in its own folder
    if not os.access(binary, os.X_OK):
        pytest.fail(f"SWITCHYARD_BIN={binary!r} is not an executable file")
    folder = tmp_path_factory.mktemp("gateway")
    config = folder / "switchyard.toml"
    config.write_text(CONFIG.format(url=fake_upstream.url, max_tokens=DEFAULT_MAX_TOKENS))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env.update(NO_COLOR="1", SWITCHYARD_TEST_CLAUDE_KEY=CLAUDE_KEY, SWITCHYARD_TEST_GPT_KEY=GPT_KEY)
    proc = subprocess.Popen(
        [binary, "--config", str(config), "--listen", "127.0.0.1:0"],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    gw = Gateway(url="", process=proc)
    found = threading.Event()

    def read_stderr() -> None:
        for line in proc.stderr:
            line = ANSI.sub("", line.rstrip("\n"))
            gw.log.append(line)
            if not found.is_set() and "switchyard listening" in line:
                m = ADDR.search(line)
                if m:
                    gw.url = f"http://{m.group(1)}"
                    found.set()

    reader = threading.Thread(target=read_stderr, name="switchyard-stderr", daemon=True)
    reader.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not found.wait(0.05):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            reader.join(2)
            pytest.fail(
                f"switchyard ({binary}) did not print its listening line (exit status {proc.returncode}); "
                f"stderr:\n" + "\n".join(gw.log)
            )
    yield gw
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader.join(2)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the gateway's log lines written during a failing translation test to its report."""
    outcome = yield
    report = outcome.get_result()
    gw = item.funcargs.get("gateway") if hasattr(item, "funcargs") else None
    mark = getattr(item, "_gateway_log_mark", None)
    if report.failed and isinstance(gw, Gateway) and mark is not None:
        report.sections.append(("switchyard stderr", gw.log_since(mark) or "(nothing)"))
