#!/usr/bin/env python3
"""A fake Switchyard for working on src/dashboard.html without the gateway (development aid, not run by CI).

    python3 tests/dashboard/fake_gateway.py [PORT]     # then open http://127.0.0.1:PORT/dashboard

Serves the page at /dashboard (re-read on every request), /dashboard/data built from fixture.json with
counters that grow on every poll (now_ms advances 2 s per poll, so headless Chromium's virtual time fills
the charts), and PATCH /admin/flags/{key} with admin token "demo-token". /dashboard/data?fail_after=N
answers 503 from the N-th poll on, to see the "gateway unreachable" banner. /fixture.json is the static
fixture itself.
"""
import copy
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs, unquote

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = os.path.join(HERE, "..", "..", "src", "dashboard.html")
FIXTURE = os.path.join(HERE, "fixture.json")
TOKEN = "demo-token"
state = {"polls": 0, "flags": {}, "data": None}


def observe(hist, value, times):
    """Adds `times` observations of `value` to a cumulative histogram."""
    for j, le in enumerate(hist["le"]):
        if value <= le:
            hist["counts"][j] += times
    hist["count"] += times
    hist["sum"] += value * times


def step(data, n):
    """One poll later: every variant gains traffic at its own pace (3x during polls 40-59), the gpt-4o
    variant gets slower from poll 50 on and the second variant fails 10% of its calls."""
    data["now_ms"] += 2000
    for i, v in enumerate(data["variants"]):
        k = (i + 1) * (3 if 40 <= n < 60 else 1)
        v["requests"] += 2 * k
        v["errors"] += (2 * k) // 10 if i == 1 else 0
        v["fallbacks"] += 1 if n % (7 + i) == 0 else 0
        slow = 4 if (i == 2 and n >= 50) else 1
        for j in range(2 * k):
            observe(v["latency_s"], (0.04 + 0.03 * i + 0.02 * (j % 4)) * slow, 1)
            observe(v["ttft_s"], (0.008 + 0.004 * i + 0.003 * (j % 3)) * slow, 1)
            observe(v["cost_usd"], 0.0008 * (i + 1) * (1 + j % 3), 1)
        v["tokens"]["input"] += 800 * k
        v["tokens"]["output"] += 250 * k


def current(n):
    if state.get("data") is None:
        with open(FIXTURE) as f:
            state["data"] = json.load(f)
    else:
        step(state["data"], n)
    data = copy.deepcopy(state["data"])
    for f in data["flags"]:
        f.update(state["flags"].get(f["key"], {}))
    return data


class Handler(BaseHTTPRequestHandler):
    def send(self, status, ctype, body, extra=()):
        body = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.send_header("cache-control", "no-store")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/dashboard":
            with open(PAGE, "rb") as f:
                return self.send(200, "text/html; charset=utf-8", f.read())
        if url.path == "/fixture.json":
            with open(FIXTURE, "rb") as f:
                return self.send(200, "application/json", f.read())
        if url.path == "/dashboard/data":
            fail_after = parse_qs(url.query).get("fail_after")
            state["polls"] += 1
            if fail_after and state["polls"] >= int(fail_after[0]):
                return self.send(503, "text/plain", "down")
            return self.send(200, "application/json", json.dumps(current(state["polls"])))
        self.send(404, "text/plain", "not found")

    def do_PATCH(self):
        url = urlparse(self.path)
        if not url.path.startswith("/admin/flags/"):
            return self.send(404, "text/plain", "not found")
        err = lambda s, m, t: self.send(s, "application/json", json.dumps({"error": {"message": m, "type": t}}),
                                        [("www-authenticate", "Bearer")] if s == 401 else [])
        if self.headers.get("authorization") != "Bearer " + TOKEN:
            return err(401, "missing or wrong admin token", "authentication_error")
        key = unquote(url.path[len("/admin/flags/"):])
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
        active = bool(body.get("active"))
        state["flags"][key] = {"active": active, "killed": not active, "override": {"active": active}}
        self.send(200, "application/json", json.dumps({"key": key, **state["flags"][key]}))

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8765
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
