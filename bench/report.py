#!/usr/bin/env python3
"""Aggregates the raw results of bench/run.sh: medians over the interleaved repetitions, latency
added over direct (the median of each repetition's proxied-minus-direct difference), throughput
ratios, stream first/last byte, RSS and CPU per 10k requests. Prints a table and one final JSON
line, and writes the Markdown report (machine, versions, settings, exact commands).
Standard library only."""

import argparse
import glob
import json
import os
import re
import statistics
import sys

# pgo: the same gateway built by bench/pgo.sh (profile-guided), when run.sh runs with PGO=1.
TARGETS = ["direct", "switchyard", "pgo", "floor", "nginx"]
PROXIES = [t for t in TARGETS if t != "direct"]
LABEL = {"p50": "p50", "p99": "p99", "p999": "p99.9"}
SAT = 0.95  # a fixed-rate run that achieves less than this share of the offered rate is saturated


def load(path):
    try:
        with open(path) as f:
            text = f.read().strip()
        return json.loads(text.splitlines()[-1]) if text else None
    except (OSError, ValueError, IndexError):
        return None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class Cell:
    """One (kind, path, target): per-repetition values of each metric, plus errors."""

    def __init__(self):
        self.reps = {}  # rep -> {metric: value}
        self.errors = 0
        self.first_error = None

    def add(self, rep, metrics, errors=0, first_error=None):
        self.reps[rep] = metrics
        self.errors += errors
        if first_error and not self.first_error:
            self.first_error = first_error


def parse_raw(raw):
    cells = {}  # (kind, path, target) -> Cell

    def cell(kind, path, target):
        return cells.setdefault((kind, path, target), Cell())

    name_re = re.compile(r"^(?P<kind>[a-z0-9-]+)__(?P<path>[a-z]+)__(?P<target>[a-z]+)__r(?P<rep>\d+)")
    for f in sorted(glob.glob(os.path.join(raw, "*"))):
        base = os.path.basename(f)
        m = name_re.match(base)
        if not m:
            continue
        kind, path, target, rep = m["kind"], m["path"], m["target"], int(m["rep"])
        if base.endswith(".json") and kind in ("latency", "stream", "open"):
            d = load(f)
            if d is None:
                err = open(f + ".err").read().strip()[:300] if os.path.exists(f + ".err") else "no output"
                cell(kind, path, target).add(rep, {}, 1, err)
                continue
            metrics = {}
            if kind == "latency" and d.get("latency_us"):
                lat = d["latency_us"]
                metrics = {"p50": lat["p50"], "p99": lat["p99"], "p999": lat["p999"]}
            elif kind == "stream" and d.get("ttfb_us"):
                metrics = {
                    "ttfb_p50": d["ttfb_us"]["p50"], "ttfb_p99": d["ttfb_us"]["p99"],
                    "ttlb_p50": d["ttlb_us"]["p50"], "ttlb_p99": d["ttlb_us"]["p99"],
                }
            elif kind == "open":
                metrics = {"rss_open_kib": d["rss_open_kib"], "open": d["open"],
                           "rss_before_kib": d["rss_before_kib"]}
            cell(kind, path, target).add(rep, metrics, d.get("errors", 0), d.get("first_error"))
        elif base.endswith(".oha"):
            d = load_oha(f)
            cpu = load(f[: -len(".oha")] + ".cpu") or {}
            if d is None:
                err = open(f[:-4] + ".err").read().strip()[:300] if os.path.exists(f[:-4] + ".err") else "no output"
                cell(kind, path, target).add(rep, {}, 1, err)
                continue
            codes = d.get("statusCodeDistribution") or {}
            ok = sum(n for c, n in codes.items() if str(c).startswith("2"))
            total = sum(codes.values())
            # oha cuts the requests still in flight when -z runs out: not failures of the target.
            failed = sum(n for e, n in (d.get("errorDistribution") or {}).items() if "deadline" not in e)
            bad = total - ok + failed
            summ = d.get("summary") or {}
            rps_all = summ.get("requestsPerSec") or 0.0
            rps_ok = rps_all * ok / total if total else 0.0
            pct = d.get("latencyPercentiles") or {}
            us = lambda k: pct[k] * 1e6 if pct.get(k) is not None else None  # noqa: E731
            metrics = {"rps": rps_ok, "p50": us("p50"), "p99": us("p99"), "p999": us("p99.9")}
            if cpu.get("clk_tck") and ok:
                metrics["cpu_s_per_10k"] = cpu["cpu_ticks"] / cpu["clk_tck"] / ok * 10_000
            first = None
            if bad:
                first = f"{bad} of {total + failed} requests failed: status codes {codes}, errors {d.get('errorDistribution')}"
                if ok == 0:
                    metrics = {}
            cell(kind, path, target).add(rep, metrics, bad, first)
    return cells


def load_oha(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def summarize(cells, kind, path, metric, higher_is_better=False):
    """Median per target, and the median over repetitions of (proxied - direct)."""
    out = {}
    direct = cells.get((kind, path, "direct"))
    for t in TARGETS:
        c = cells.get((kind, path, t))
        if c is None:
            continue
        vals = {r: m.get(metric) for r, m in c.reps.items()}
        out[t] = median(vals.values())
        if t != "direct" and direct is not None and not higher_is_better:
            diffs = [v - direct.reps.get(r, {}).get(metric) for r, v in vals.items()
                     if v is not None and direct.reps.get(r, {}).get(metric) is not None]
            out[t + "_added"] = median(diffs)
    return out


def fmt(v, unit):
    if v is None:
        return "n/a"
    if unit == "us":
        return f"{v:,.0f} µs" if abs(v) >= 100 else f"{v:,.1f} µs"
    if unit == "rps":
        return f"{v:,.0f}/s"
    if unit == "mib":
        return f"{v / 1024:,.1f} MiB"
    if unit == "cpu":
        return f"{v:.2f} s"
    if unit == "x":
        return f"{v:.2f}×"
    return str(v)


def build(cells, env):
    rows = []  # (path, measure, unit, {direct, switchyard, floor, nginx, *_added}, note)
    results = {}
    paths = env["PATHS"].split()
    rates = [r for r in env["RATES"].split() if r != "0"]

    def add(path, key, measure, unit, s, note=""):
        rows.append((path, measure, unit, s, note))
        results.setdefault(path, {})[key] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}

    for path in paths:
        for q in ("p50", "p99", "p999"):
            add(path, f"one_in_flight_{q}_us", f"1 in flight {LABEL[q]}", "us", summarize(cells, "latency", path, q))
        for rate in rates:
            kind = f"rate-{rate}"
            rps = summarize(cells, kind, path, "rps", higher_is_better=True)
            sat = [t for t in TARGETS if rps.get(t) is not None and rps[t] < SAT * float(rate)]
            note = ("saturated: " + ", ".join(f"{t} {rps[t]:,.0f}/s" for t in sat)) if sat else ""
            for q in ("p50", "p99", "p999"):
                add(path, f"rate_{rate}_{q}_us", f"{int(rate):,}/s {LABEL[q]}", "us", summarize(cells, kind, path, q), note)
            results[path][f"rate_{rate}_achieved_rps"] = {k: round(v) for k, v in rps.items() if v is not None}
        mx = summarize(cells, "rate-0", path, "rps", higher_is_better=True)
        ratio = lambda a, b: mx[a] / mx[b] if mx.get(a) and mx.get(b) else None  # noqa: E731
        for t in PROXIES:
            if mx.get(t) is not None:
                mx[t + "_added"] = ratio(t, "direct")
        rows.append((path, "max throughput", "rps", mx, "added columns: each proxy ÷ direct"))
        if mx.get("nginx"):
            over = {t: ratio(t, "nginx") for t in TARGETS if mx.get(t) is not None}
            rows.append((path, "max throughput ÷ nginx", "x", over, "each target's median ÷ nginx's"))
        results.setdefault(path, {})["max_rps"] = {
            **{t: mx.get(t) for t in TARGETS if mx.get(t) is not None},
            # Each ratio once: over direct, and over the targets after it (floor_over_nginx, not its inverse).
            **{f"{t}_over_{b}": ratio(t, b) for t in PROXIES for b in ("direct", "floor", "nginx")
               if (b == "direct" or TARGETS.index(b) > TARGETS.index(t)) and ratio(t, b) is not None}}
        for rk, label in (("rate-1000", "CPU s / 10k req at 1k/s"), ("rate-0", "CPU s / 10k req at max")):
            if any(k[0] == rk and k[1] == path for k in cells):
                s = summarize(cells, rk, path, "cpu_s_per_10k", higher_is_better=True)
                add(path, "cpu_s_per_10k_" + ("1k" if rk == "rate-1000" else "max"), label, "cpu", s,
                    "direct: the mock upstream's own CPU")
    for path in env["STREAM_PATHS"].split():
        p = path + "-stream"
        for m in ("ttfb_p50", "ttfb_p99", "ttlb_p50", "ttlb_p99"):
            label = ("first byte " if m.startswith("ttfb") else "last byte ") + m[-3:]
            add(p, m + "_us", f"{env['CHUNKS']}-chunk stream {label}", "us", summarize(cells, "stream", path, m))
    op = summarize(cells, "open", "passthrough", "rss_open_kib", higher_is_better=True)
    opened = summarize(cells, "open", "passthrough", "open", higher_is_better=True)
    note = "open: " + ", ".join(f"{t} {v:.0f}" for t, v in opened.items() if v is not None)
    add("memory", "rss_open_streams_kib", f"RSS, {env['OPEN_STREAMS']} open streams", "mib", op, note)
    for phase in ("start", "end"):
        d = cells.get(("idle", phase)) or {}
        add("memory", f"rss_idle_{phase}_kib", f"RSS idle ({'after start' if phase == 'start' else 'after the run'})",
            "mib", {t: d.get(t) for t in TARGETS if t in d}, "direct: the mock upstream")
    errors = {}
    for (kind, path, target), c in sorted((k, v) for k, v in cells.items() if isinstance(v, Cell)):
        if c.errors:
            errors[f"{kind}/{path}/{target}"] = {"errors": c.errors, "first": c.first_error}
    return rows, results, errors


def ran(rows, target):
    return any(target in s for _, _, _, s, _ in rows)


def table(rows, markdown):
    # Columns only for the targets that ran.
    targets = [t for t in TARGETS if ran(rows, t)]
    added = [t for t in targets if t != "direct"]
    head = ["path", "measure"] + targets + [f"{t} added" for t in added] + ["note"]
    body = []
    for path, measure, unit, s, note in rows:
        # Added cells: ratios to direct for throughput, differences otherwise; none on a ratio row.
        added_unit = "x" if unit == "rps" else unit
        cells = ["" if unit == "x" else fmt(s.get(t + "_added"), added_unit) for t in added]
        body.append([path, measure] + [fmt(s.get(t), unit) for t in targets] + cells + [note])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head) - 1)]
    out = []
    for r in [head] + body:
        out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + "  " + r[-1])
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--commands", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--strip", action="append", default=[], help="OLD=NEW replaced in the recorded commands")
    a = ap.parse_args()

    env = {k: os.environ.get(k, "") for k in
           ("REPS", "DURATION", "RATES", "CONNECTIONS", "OPEN_STREAMS", "CHUNKS", "PATHS", "STREAM_PATHS", "QUICK", "BLOCK")}
    machine = dict(line.split("=", 1) for line in open(a.machine).read().splitlines() if "=" in line)
    cells = parse_raw(a.raw)
    for phase in ("start", "end"):
        d = load(os.path.join(a.raw, f"idle-{phase}.json"))
        if d:
            cells[("idle", phase)] = d
    rows, results, errors = build(cells, env)

    print()
    print(table(rows, markdown=False))
    if errors:
        print("\nerrors (these cells have no or partial numbers):")
        for k, v in errors.items():
            print(f"  {k}: {v['errors']} — {v['first']}")

    commands = open(a.commands).read()
    for pair in a.strip:
        old, _, new = pair.partition("=")
        if old:
            commands = commands.replace(old, new)
    settings = {k: v for k, v in env.items()}
    final = {"switchyard_bench": {"machine": machine, "settings": settings, "results": results, "errors": errors}}

    quick = env.get("QUICK") == "1"
    floor = ran(rows, "floor")
    pgo = ran(rows, "pgo")
    md = [
        "# Switchyard benchmark results",
        "",
        "Written by `bench/run.sh` (see `bench/README.md`); do not edit by hand, run it again.",
        "",
    ]
    if quick:
        md += ["**QUICK run** (1 repetition, runs of about a second): a smoke test of the harness, "
               "not numbers to compare or quote.", ""]
    md += [
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
    ]
    md += [f"| {k} | {v} |" for k, v in machine.items()]
    md += [
        "",
        "## Settings",
        "",
        "| | |",
        "|---|---|",
    ]
    md += [f"| {k} | {v} |" for k, v in settings.items()]
    md += [
        "",
        "## Results",
        "",
        "Medians over the repetitions; each repetition runs direct, Switchyard"
        + (" (the plain release build, and `pgo`: the same source built by `bench/pgo.sh`, profile-guided)" if pgo else "")
        + (", the hyper floor" if floor else "") + " and nginx back to back (interleaved); with one request "
        "in flight and for streams the targets also take turns within a run, `BLOCK` requests at a time "
        "(0: one target's run after another's). \"Added\" is "
        "the median over repetitions of (proxied − direct) for the same measure; for max throughput the "
        "added columns are ratios to direct, and the row below gives each target ÷ nginx. Direct is the mock upstream with no proxy"
        + ("; the floor is a bare hyper reverse proxy with Switchyard's worker layout and connection "
           "pooling (`src/bin/switchyard-bench-floor.rs`): what the HTTP stack alone costs" if floor else "")
        + ". The anthropic path is an Anthropic caller on the translated path's backend (same dialect, so "
        "the two streams differ by the translation alone); on both, the direct" + (", floor" if floor else "")
        + " and nginx runs send the Anthropic request to `/v1/messages`. Load generator, proxy and mock "
        "share the machine's cores.",
        "",
        table(rows, markdown=True),
        "",
    ]
    if errors:
        md += ["## Errors", "", "Cells below had failed requests; their numbers are missing or partial.", ""]
        md += [f"- `{k}`: {v['errors']} — {v['first']}" for k, v in errors.items()]
        md += [""]
    md += ["## Exact commands", "", "```sh", commands.rstrip(), "```", "",
           "## Final JSON", "", "```json", json.dumps(final), "```", ""]
    with open(a.results, "w") as f:
        f.write("\n".join(md))
    print(f"\nwrote {os.path.basename(a.results)}", file=sys.stderr)
    print(json.dumps(final))


if __name__ == "__main__":
    main()
