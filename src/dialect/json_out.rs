//! A small JSON writer for the translations' typed outputs (a translated request, a whole translated
//! reply): keys and strings are escaped exactly as serde_json escapes them, integers are written by
//! `itoa` (as serde_json writes them), and everything else (a float, a `Value` passed through) is
//! written by serde_json itself.
//!
//! Why not serde's derive: serde_json checks a string's bytes one at a time against its escape
//! table, about a tenth of a translated request's instructions. Prompt text mostly needs no escape,
//! so here a string is searched eight bytes at a time for the next byte that does, and the runs in
//! between are copied whole.

use serde::Serialize;

/// The output text, written front to back.
pub struct JsonOut {
    buf: Vec<u8>,
}

impl JsonOut {
    /// A writer whose buffer holds `capacity` bytes before it grows (the input's size is a good guess).
    pub fn with_capacity(capacity: usize) -> Self {
        JsonOut { buf: Vec::with_capacity(capacity) }
    }

    /// A writer appending to `buf` (a buffer kept for reuse).
    pub fn from_vec(buf: Vec<u8>) -> Self {
        JsonOut { buf }
    }

    /// Text the caller knows to be one valid JSON value (a number it formatted), as it is.
    pub fn raw(&mut self, json: &[u8]) {
        self.buf.extend_from_slice(json);
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    /// A JSON string of `s`.
    pub fn str(&mut self, s: &str) {
        let bytes = s.as_bytes();
        self.buf.reserve(bytes.len() + 2);
        self.buf.push(b'"');
        let mut start = 0;
        while let Some(at) = next_to_escape(bytes, start) {
            self.buf.extend_from_slice(&bytes[start..at]);
            escape(bytes[at], &mut self.buf);
            start = at + 1;
        }
        self.buf.extend_from_slice(&bytes[start..]);
        self.buf.push(b'"');
    }

    /// An unsigned integer, in decimal: by `itoa`, as serde_json writes it.
    pub fn u64(&mut self, n: u64) {
        self.buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    pub fn bool(&mut self, b: bool) {
        self.buf.extend_from_slice(if b { b"true" } else { b"false" });
    }

    pub fn null(&mut self) {
        self.buf.extend_from_slice(b"null");
    }

    /// Any other value (a float, a `Value`), as serde_json writes it.
    pub fn value<T: Serialize + ?Sized>(&mut self, v: &T) {
        // Writing into memory fails only for a value serde_json refuses (a map with non-string keys);
        // the translations pass numbers and `Value`s, which it always writes.
        let _ = serde_json::to_writer(&mut self.buf, v);
    }

    /// The comma before a member or element, unless it is the first (`empty` is then cleared).
    fn comma_unless(&mut self, empty: &mut bool) {
        if !std::mem::take(empty) {
            self.buf.push(b',');
        }
    }

    /// Starts an object; its members are written through the returned `Members`.
    pub fn object(&mut self) -> Members<'_> {
        self.buf.push(b'{');
        Members { out: self, empty: true }
    }

    /// Starts an array; its elements are written through the returned `Elements`.
    pub fn array(&mut self) -> Elements<'_> {
        self.buf.push(b'[');
        Elements { out: self, empty: true }
    }
}

/// The members of an object being written; `end` closes it.
pub struct Members<'w> {
    out: &'w mut JsonOut,
    empty: bool,
}

impl Members<'_> {
    /// Writes the member name `key` and its colon; the value is then written to the returned writer
    /// (exactly one). `key` is a name of the protocol, written as it is: it must need no escape.
    pub fn key(&mut self, key: &'static str) -> &mut JsonOut {
        debug_assert!(!key.bytes().any(needs_escape), "{key:?}");
        self.out.comma_unless(&mut self.empty);
        self.out.buf.push(b'"');
        self.out.buf.extend_from_slice(key.as_bytes());
        self.out.buf.extend_from_slice(b"\":");
        self.out
    }

    /// [`Members::key`] for any name (escaped as needed).
    pub fn any_key(&mut self, key: &str) -> &mut JsonOut {
        self.out.comma_unless(&mut self.empty);
        self.out.str(key);
        self.out.buf.push(b':');
        self.out
    }

    pub fn end(self) {
        self.out.buf.push(b'}');
    }
}

/// The elements of an array being written; `end` closes it.
pub struct Elements<'w> {
    out: &'w mut JsonOut,
    empty: bool,
}

impl Elements<'_> {
    /// The writer for the next element (exactly one value).
    pub fn next(&mut self) -> &mut JsonOut {
        self.out.comma_unless(&mut self.empty);
        self.out
    }

    pub fn end(self) {
        self.out.buf.push(b']');
    }
}

/// Whether serde_json escapes this byte in a string: the quote, the backslash and control characters.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The index of the first byte at or after `from` that needs an escape: eight bytes at a time, in
/// a word (the test serde_json's reader uses to skip to a string's end; the last few bytes padded
/// to a word), bytes one by one only in a word that has one.
fn next_to_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = &bytes[from..];
    let mut words = rest.chunks_exact(8);
    let mut offset = from;
    for word in &mut words {
        let mut w = [0; 8];
        w.copy_from_slice(word);
        if word_needs_escape(w) {
            return word.iter().position(|&b| needs_escape(b)).map(|i| offset + i);
        }
        offset += 8;
    }
    let tail = words.remainder();
    let mut w = [b'a'; 8];
    w[..tail.len()].copy_from_slice(tail);
    if word_needs_escape(w) {
        return tail.iter().position(|&b| needs_escape(b)).map(|i| offset + i);
    }
    None
}

/// Whether one of eight bytes needs an escape: the word test the request scan uses too.
fn word_needs_escape(w: [u8; 8]) -> bool {
    super::scan::word_special(u64::from_le_bytes(w)).is_some()
}

/// The escape serde_json writes for `b` (one of `needs_escape`).
fn escape(b: u8, buf: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short: &[u8] = match b {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x08 => b"\\b",
        0x0c => b"\\f",
        _ => {
            buf.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
            return;
        }
    };
    buf.extend_from_slice(short);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(s: &str) -> Vec<u8> {
        let mut out = JsonOut::with_capacity(0);
        out.str(s);
        out.into_vec()
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let cases = [
            "",
            "plain",
            "a \"quote\" and a \\ backslash",
            "line\nbreak\r\ttab\u{8}\u{c}",
            "\u{0}\u{1}\u{1f}\u{7f} control characters; DEL is not escaped",
            "ünïcödé, 日本語 and an emoji 🦀 pass as they are",
            "sixteen bytes!!!\"then a quote past the first chunk, and one at the very end\"",
        ];
        for s in cases {
            assert_eq!(written(s), serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn objects_and_arrays_are_comma_separated() {
        let mut out = JsonOut::with_capacity(0);
        let mut o = out.object();
        o.key("a").value(&1);
        let mut list = o.key("b").array();
        list.next().bool(true);
        list.next().null();
        list.next().object().end();
        list.end();
        o.any_key("c\"").str("x");
        o.end();
        assert_eq!(String::from_utf8(out.into_vec()).unwrap(), r#"{"a":1,"b":[true,null,{}],"c\"":"x"}"#);
    }

    #[test]
    fn integers_are_written_in_decimal() {
        for n in [0, 7, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            let mut out = JsonOut::with_capacity(0);
            out.u64(n);
            assert_eq!(out.into_vec(), n.to_string().into_bytes(), "{n}");
        }
    }

    proptest! {
        #[test]
        fn any_string_is_written_byte_for_byte_as_serde_json_writes_it(s in any::<String>(), ascii in "[ -~\n\t\"\\\\\u{0}-\u{1f}]{0,80}") {
            prop_assert_eq!(written(&s), serde_json::to_vec(&s).unwrap());
            prop_assert_eq!(written(&ascii), serde_json::to_vec(&ascii).unwrap());
        }
    }
}
