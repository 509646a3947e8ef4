#!/usr/bin/env python3
# Writes fuzz/seeds/<target>/ from the repo's own test data: the dialect golden transcripts
# (tests/dialect), the flag vectors (tests/vectors), the usage fixtures and the demo flags file.
# Input layouts are those of src/fuzzing.rs (and fuzz/README.md). Run from the repo root:
#   python3 fuzz/make_seeds.py
import glob, json, os, struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def sse_text(transcript):
    if isinstance(transcript, str):
        return transcript
    out = ""
    for frame in transcript:
        if "event" in frame:
            out += "event: %s\n" % frame["event"]
        data = frame["data"]
        out += "data: %s\n\n" % (data if isinstance(data, str) else json.dumps(data, separators=(",", ":")))
    return out


def main():
    dirs = {"openai_client_anthropic_backend": ("oa", 0), "anthropic_client_openai_backend": ("ao", 1)}
    for path in sorted(glob.glob(os.path.join(ROOT, "tests/dialect/*/*.json"))):
        direction = os.path.basename(os.path.dirname(path))
        tag, caller = dirs[direction]
        case = json.load(open(path))
        stem = "%s_%s" % (tag, os.path.basename(path)[:2])
        if "client_request" in case:
            body = json.dumps(case["client_request"], indent=1).encode()
            headers = b"x-distinct-id: user-42\nx-person-properties: {\"email\": \"ann@example.com\"}\n\n"
            write("request", stem, bytes([caller]) + headers + body)
            write("dialect", stem + "_req", bytes([caller]) + body)
        if "upstream_response" in case:
            body = json.dumps(case["upstream_response"]).encode()
            write("dialect", stem + "_resp", bytes([2 if caller == 0 else 3]) + body)
        for i, err in enumerate(case.get("upstream_errors", [])[:3]):
            body = err["body"] if isinstance(err["body"], str) else json.dumps(err["body"])
            mode = 4 if caller == 0 else 5
            write("dialect", "%s_err%d" % (stem, i), bytes([mode]) + struct.pack(">H", err["status"] - 400) + body.encode())
        if "upstream_sse" in case:
            text = sse_text(case["upstream_sse"]).encode()
            modes = [0, 1, 5] if caller == 0 else [2, 3, 4]
            for m in modes:
                write("sse", "%s_m%d" % (stem, m), bytes([m, 37]) + text)
    # Identity headers the gateway refuses (a number out of range, not an object, invalid UTF-8)
    # and one it reads (groups with properties).
    hi = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    for name, caller, headers in [
        ("identity_range", 0, b'x-distinct-id: u-1\nx-groups: {"company": 1e999}\nx-person-properties: {"plan": "pro"}'),
        ("identity_array", 1, b'x-person-properties: [1, {"a": "\xff"}]'),
        ("identity_groups", 0, b'x-distinct-id: u-2\nx-groups: {"company": "acme"}\nx-group-properties: {"company": {"size": 3}}'),
    ]:
        write("request", name, bytes([caller]) + headers + b"\n\n" + json.dumps(hi).encode())
    for name, mode in [("anthropic_stream.sse", 5), ("openai_stream.sse", 4)]:
        text = open(os.path.join(ROOT, "tests/fixtures/usage", name), "rb").read()
        write("sse", "fixture_" + name, bytes([mode, 11]) + text)
    for path in sorted(glob.glob(os.path.join(ROOT, "tests/vectors/*.json"))):
        v = json.load(open(path))
        stem = os.path.basename(path)[:-5]
        for i in (0, 7):
            first = json.dumps({"distinct_id": v["distinct_id_pattern"].format(i=i)}).encode()
            write("flags", "%s_%d" % (stem, i), first + b"\n" + json.dumps(v["definitions"], indent=1).encode())
    demo = open(os.path.join(ROOT, "config/demo-flags.json"), "rb").read()
    for who, props in [("staff", {"email": "ann@example.com"}), ("other", {"email": "bob@corp.io"}), ("anon", {})]:
        first = json.dumps({"distinct_id": "user-3", "person_properties": props}).encode()
        write("flags", "demo_" + who, first + b"\n" + demo)


if __name__ == "__main__":
    main()
