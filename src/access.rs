//! The access log line (`switchyard::access`, one per LLM request): its fields and its writing.
//! The binary asks for the direct writer (`write_directly`) when its log is not coloured (a file, a
//! pipe, a collector: production); the line is then formatted here, into a buffer of the thread's,
//! in the shape tracing-subscriber gives it (text or JSON; a golden test compares the two byte for
//! byte), and written to stderr in one `write`, as tracing-subscriber writes its lines. On a
//! terminal, and where nothing asked for the direct writer (the library in tests), the line is a
//! `tracing` event as any other. Both honour `RUST_LOG` (`switchyard::access=off` silences it).
//! Why: through tracing-subscriber's field visitors the line cost about 23k instructions a request,
//! 40 % of a pass-through request's whole cost at the default `info`; written here, about 3.4k
//! (JSON: 32k before, 5.1k here; `RUST_LOG=info LOG_FORMAT=json bench/callgrind.sh`).

use crate::dialect::json_out::JsonOut;
use std::cell::RefCell;
use std::io::Write;
use std::sync::OnceLock;

/// The fields of one access line, borrowed from the request's context.
#[derive(Debug, Clone)]
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub dialect: Option<&'a str>,
    pub route: Option<&'a str>,
    pub flag: Option<&'a str>,
    pub variant: Option<&'a str>,
    pub backend: Option<&'a str>,
    pub model: Option<&'a str>,
    pub reason: &'a str,
    pub stream: bool,
    pub status: u16,
    pub error: Option<&'a str>,
    pub fault: Option<&'a str>,
    pub fallback_from: Option<&'a str>,
    pub fallback_reason: Option<&'a str>,
    /// Milliseconds to the microsecond (`Millis`), so lines read `duration_ms=0.831`, not `0.8307280000000001`.
    pub duration_ms: Millis,
    pub ttft_ms: Option<Millis>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

/// A duration in milliseconds with three decimals, kept as whole microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub u64);

impl Millis {
    pub fn of(d: std::time::Duration) -> Self {
        Millis(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    /// The value a `tracing` field or a JSON number carries: the double nearest `micros / 1000`,
    /// whose shortest form is the three-decimal one (below 2^43 microseconds, 101 days; a request
    /// ends by its total timeout long before).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// What Rust's `{:?}` and serde_json write for `as_f64()` (a shortest round-trip form: `0.831`,
    /// `1.5`, `2.0`), without formatting a float.
    fn text(self) -> MillisText {
        let mut t = MillisText { bytes: [0; 26], len: 0 };
        let mut digits = itoa::Buffer::new();
        let whole = digits.format(self.0 / 1000).as_bytes();
        t.bytes[..whole.len()].copy_from_slice(whole);
        t.bytes[whole.len()] = b'.';
        t.len = whole.len() + 1;
        let frac = (self.0 % 1000) as u16;
        let d = [b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8];
        // Trailing zeros go, but one digit stays: `2.0`, `1.5`, `0.25`, `0.831`.
        let keep = if d[2] != b'0' {
            3
        } else if d[1] != b'0' {
            2
        } else {
            1
        };
        t.bytes[t.len..t.len + keep].copy_from_slice(&d[..keep]);
        t.len += keep;
        t
    }
}

/// `Millis::text`: at most 20 digits, the point and 3 decimals.
struct MillisText {
    bytes: [u8; 26],
    len: usize,
}

impl MillisText {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The shape of the lines the binary writes, as `[server] log_format` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Text,
    Json,
}

static DIRECT: OnceLock<Shape> = OnceLock::new();

/// From now on access lines are written here in this shape, not through `tracing`'s formatter
/// (which must be the global subscriber, writing uncoloured lines of the same shape to stderr).
pub fn write_directly(shape: Shape) {
    let _ = DIRECT.set(shape);
}

/// Whether `RUST_LOG` lets access lines through (checked before the line is put together).
pub fn enabled() -> bool {
    tracing::enabled!(target: "switchyard::access", tracing::Level::INFO)
}

thread_local! {
    /// The line being written, and the timestamp's text up to the second with the second it is for.
    static SCRATCH: RefCell<(Vec<u8>, u64, [u8; 20])> = const { RefCell::new((Vec::new(), u64::MAX, [0; 20])) };
}

/// Writes the line, if `enabled()` (the caller checks).
pub fn emit(line: &AccessLine<'_>) {
    let Some(&shape) = DIRECT.get() else {
        line.via_tracing();
        return;
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    SCRATCH.with_borrow_mut(|(buf, second, prefix)| {
        if *second != now.as_secs() {
            *second = now.as_secs();
            *prefix = second_prefix(now.as_secs());
        }
        let mut stamp = [0u8; 27];
        stamp[..20].copy_from_slice(prefix);
        let micros = now.subsec_micros();
        for (i, place) in [100_000, 10_000, 1_000, 100, 10, 1].into_iter().enumerate() {
            stamp[20 + i] = b'0' + (micros / place % 10) as u8;
        }
        stamp[26] = b'Z';
        buf.clear();
        format(buf, &stamp, shape, line);
        // One write, as tracing-subscriber's own lines (both lock stderr, so lines never interleave).
        let _ = std::io::stderr().lock().write_all(buf);
        if buf.capacity() > 64 * 1024 {
            *buf = Vec::new();
        }
    });
}

/// `YYYY-MM-DDTHH:MM:SS.` of a Unix second, in UTC, as tracing-subscriber writes it.
fn second_prefix(secs: u64) -> [u8; 20] {
    let mut out = [0u8; 20];
    let text = chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S.")
        .to_string();
    // Years past 9999 have more digits; they keep the first 20 bytes (the line stays readable).
    let n = text.len().min(20);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

/// The whole line, newline included, after `stamp`.
fn format(out: &mut Vec<u8>, stamp: &[u8], shape: Shape, line: &AccessLine<'_>) {
    match shape {
        Shape::Text => text(out, stamp, line),
        Shape::Json => json(out, stamp, line),
    }
}

/// One field's value, by how each format writes it.
enum Value<'a> {
    /// A `%` field: as it is in text, a string in JSON.
    Shown(&'a str),
    /// A string: quoted as `{:?}` quotes it in text, a string in JSON.
    Str(&'a str),
    Bool(bool),
    Int(u64),
    Ms(Millis),
}

/// The fields in the order both formats write them; an absent one is left out.
fn fields<'a>(l: &AccessLine<'a>) -> [(&'static str, Option<Value<'a>>); 20] {
    use Value::*;
    [
        ("request_id", Some(Shown(l.request_id))),
        ("method", Some(Shown(l.method))),
        ("path", Some(Shown(l.path))),
        ("dialect", l.dialect.map(Str)),
        ("route", l.route.map(Str)),
        ("flag", l.flag.map(Str)),
        ("variant", l.variant.map(Str)),
        ("backend", l.backend.map(Str)),
        ("model", l.model.map(Str)),
        ("reason", Some(Str(l.reason))),
        ("stream", Some(Bool(l.stream))),
        ("status", Some(Int(u64::from(l.status)))),
        ("error", l.error.map(Str)),
        ("fault", l.fault.map(Str)),
        ("fallback_from", l.fallback_from.map(Str)),
        ("fallback_reason", l.fallback_reason.map(Str)),
        ("duration_ms", Some(Ms(l.duration_ms))),
        ("ttft_ms", l.ttft_ms.map(Ms)),
        ("input_tokens", l.input_tokens.map(Int)),
        ("output_tokens", l.output_tokens.map(Int)),
    ]
}

/// tracing-subscriber's JSON format with `flatten_event`: timestamp, level, the message, the fields
/// (strings escaped as serde_json escapes them), then the target.
fn json(out: &mut Vec<u8>, stamp: &[u8], l: &AccessLine<'_>) {
    let mut w = JsonOut::from_vec(std::mem::take(out));
    let mut o = w.object();
    // The stamp is digits, dashes, colons and letters: nothing to escape.
    let at = o.key("timestamp");
    at.raw(b"\"");
    at.raw(stamp);
    at.raw(b"\"");
    o.key("level").str("INFO");
    o.key("message").str("request");
    for (name, value) in fields(l) {
        let Some(value) = value else { continue };
        let w = o.key(name);
        match value {
            Value::Shown(v) | Value::Str(v) => w.str(v),
            Value::Bool(b) => w.bool(b),
            Value::Int(n) => w.u64(n),
            Value::Ms(ms) => w.raw(ms.text().as_bytes()),
        }
    }
    o.key("target").str("switchyard::access");
    o.end();
    *out = w.into_vec();
    out.push(b'\n');
}

/// tracing-subscriber's `Full` text format: `{stamp}  INFO switchyard::access: request`, then
/// `name=value` with `%` fields as they are, strings quoted as Rust's `{:?}` quotes them.
fn text(out: &mut Vec<u8>, stamp: &[u8], l: &AccessLine<'_>) {
    out.extend_from_slice(stamp);
    out.extend_from_slice(b"  INFO switchyard::access: request");
    let mut digits = itoa::Buffer::new();
    for (name, value) in fields(l) {
        let Some(value) = value else { continue };
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        match value {
            Value::Shown(v) => out.extend_from_slice(v.as_bytes()),
            Value::Str(v) => quote(out, v),
            Value::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
            Value::Int(n) => out.extend_from_slice(digits.format(n).as_bytes()),
            Value::Ms(ms) => out.extend_from_slice(ms.text().as_bytes()),
        }
    }
    out.push(b'\n');
}

/// `{:?}` of a string: as it is in quotes when every byte is printable ASCII other than `"` and
/// `\` (names from the config, always in practice), else Rust's own escaping.
fn quote(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

impl AccessLine<'_> {
    /// The line as a `tracing` event, for the global subscriber to format.
    fn via_tracing(&self) {
        tracing::info!(
            target: "switchyard::access",
            request_id = %self.request_id,
            method = %self.method,
            path = %self.path,
            dialect = self.dialect,
            route = self.route,
            flag = self.flag,
            variant = self.variant,
            backend = self.backend,
            model = self.model,
            reason = self.reason,
            stream = self.stream,
            status = self.status,
            error = self.error,
            fault = self.fault,
            fallback_from = self.fallback_from,
            fallback_reason = self.fallback_reason,
            duration_ms = self.duration_ms.as_f64(),
            ttft_ms = self.ttft_ms.map(Millis::as_f64),
            input_tokens = self.input_tokens,
            output_tokens = self.output_tokens,
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::{Arc, Mutex};

    const STAMP: &str = "2026-12-02T06:18:49.177412Z";

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Fixed;
    impl tracing_subscriber::fmt::time::FormatTime for Fixed {
        fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
            w.write_str(STAMP)
        }
    }

    /// The line as tracing-subscriber formats it, configured as `main` configures it (no colour).
    fn by_tracing(line: &AccessLine<'_>, shape: Shape) -> String {
        let sink = Sink::default();
        let make = {
            let sink = sink.clone();
            move || sink.clone()
        };
        let builder = tracing_subscriber::fmt().with_writer(make).with_ansi(false).with_timer(Fixed);
        match shape {
            Shape::Text => tracing::subscriber::with_default(builder.finish(), || line.via_tracing()),
            Shape::Json => {
                tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), || line.via_tracing())
            }
        }
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn by_us(line: &AccessLine<'_>, shape: Shape) -> String {
        let mut out = Vec::new();
        format(&mut out, STAMP.as_bytes(), shape, line);
        String::from_utf8(out).unwrap()
    }

    fn served() -> AccessLine<'static> {
        AccessLine {
            request_id: "6a6781aa0426de756d7301a98d4119e5",
            method: "POST",
            path: "/v1/chat/completions",
            dialect: Some("openai"),
            route: Some("passthrough"),
            flag: Some(""),
            variant: Some("control"),
            backend: Some("up-openai"),
            model: Some("gpt-4o"),
            reason: "no_flag",
            stream: false,
            status: 200,
            error: None,
            fault: None,
            fallback_from: None,
            fallback_reason: None,
            duration_ms: Millis(831),
            ttft_ms: Some(Millis(799)),
            input_tokens: Some(100),
            output_tokens: Some(8),
        }
    }

    /// Lines of every kind the gateway writes, and names no config would use.
    fn cases() -> Vec<AccessLine<'static>> {
        let refused = AccessLine {
            dialect: Some("anthropic"),
            route: None,
            flag: None,
            variant: None,
            backend: None,
            model: None,
            reason: "",
            status: 404,
            error: Some("unknown_model"),
            duration_ms: Millis(39),
            ttft_ms: None,
            input_tokens: None,
            output_tokens: None,
            ..served()
        };
        let fallback = AccessLine {
            flag: Some("llm-exp"),
            variant: Some("control"),
            reason: "variant",
            stream: true,
            status: 200,
            fault: Some("reset"),
            fallback_from: Some("claude"),
            fallback_reason: Some("upstream_5xx"),
            duration_ms: Millis(12_000_000),
            ttft_ms: Some(Millis(1_500)),
            ..served()
        };
        let odd = AccessLine {
            path: "/v1/messages?beta=true",
            route: Some("quote\" back\\slash"),
            variant: Some("tab\tnew\nline"),
            backend: Some("ünï-cödé ☃"),
            model: Some("zero\u{0}width\u{200b}esc\u{1b}[31m"),
            dialect: None,
            duration_ms: Millis(0),
            ttft_ms: Some(Millis(1)),
            input_tokens: Some(u64::MAX),
            output_tokens: Some(0),
            ..served()
        };
        vec![served(), refused, fallback, odd]
    }

    #[test]
    fn lines_are_what_tracing_subscriber_writes() {
        for line in cases() {
            for shape in [Shape::Text, Shape::Json] {
                pretty_assertions::assert_eq!(by_us(&line, shape), by_tracing(&line, shape), "{shape:?} {line:?}");
            }
        }
    }

    #[test]
    fn golden_lines() {
        assert_eq!(
            by_us(&served(), Shape::Text),
            "2026-12-02T06:18:49.177412Z  INFO switchyard::access: request \
             request_id=6a6781aa0426de756d7301a98d4119e5 method=POST path=/v1/chat/completions \
             dialect=\"openai\" route=\"passthrough\" flag=\"\" variant=\"control\" backend=\"up-openai\" \
             model=\"gpt-4o\" reason=\"no_flag\" stream=false status=200 duration_ms=0.831 ttft_ms=0.799 \
             input_tokens=100 output_tokens=8\n"
        );
        let json: serde_json::Value = serde_json::from_str(&by_us(&cases()[1], Shape::Json)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"timestamp": STAMP, "level": "INFO", "message": "request",
                "request_id": "6a6781aa0426de756d7301a98d4119e5", "method": "POST",
                "path": "/v1/chat/completions", "dialect": "anthropic", "reason": "", "stream": false,
                "status": 404, "error": "unknown_model", "duration_ms": 0.039, "target": "switchyard::access"})
        );
    }

    #[test]
    fn second_prefixes() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00."),
            (951_782_400, "2000-02-29T00:00:00."),
            (1_709_251_199, "2024-02-29T23:59:59."),
            (1_796_186_329, "2026-12-02T04:38:49."), // `date -u -d @1796186329`
            (253_402_300_799, "9999-12-31T23:59:59."),
        ] {
            assert_eq!(std::str::from_utf8(&second_prefix(secs)).unwrap(), text, "{secs}");
        }
    }

    proptest! {
        #[test]
        fn millis_are_written_as_the_float_would_be(us in prop_oneof![0u64..10_000, 0u64..(1 << 43)]) {
            let ours = String::from_utf8(Millis(us).text().as_bytes().to_vec()).unwrap();
            prop_assert_eq!(&ours, &format!("{:?}", Millis(us).as_f64()));
            prop_assert_eq!(&ours, &serde_json::to_string(&Millis(us).as_f64()).unwrap());
        }
    }
}
