//! One pass over a JSON object text that checks it without serde, and finds a few of its top-level
//! members: the fast path of the request reader (`request::parse`) and of the identity headers'
//! check. It answers for a subset of the texts serde_json accepts, and `None` (or `false`) for
//! everything else, for which the caller asks serde_json (its verdict and its error message).
//!
//! Two readings, as serde_json has them:
//! - [`members`]: the text read into a struct that ignores its other members. Strict JSON, escapes
//!   checked as serde_json checks an ignored string (any four hex digits after `\u`), numbers of any
//!   size, nesting to `MAX_DEPTH`; no top-level key written with escapes, no requested key twice.
//! - [`is_value_object`]: the text read as a `Map<String, Value>`, which checks more: no `\u`
//!   escape of a surrogate (serde_json refuses a lone one), no number with an exponent or of more
//!   than 20 characters (one out of `f64`'s range is refused), nesting to `MAX_VALUE_DEPTH` (serde_json stops at 128).
//!
//! The text must be UTF-8 already (a `&str`).

/// How deep the scan follows nested arrays and objects (a deeper text goes to serde_json, which
/// ignores nested values at any depth).
const MAX_DEPTH: usize = 256;

/// How deep a text read as a `Value` may nest here (serde_json's limit is 128 levels).
const MAX_VALUE_DEPTH: usize = 100;

/// The raw text of each of `keys` among the top-level members of the object `text` (`None` for
/// a key that is absent), if `text` is one JSON object that the scan accepts (see the module).
/// A value's text is as serde_json's `RawValue` holds it: from its first byte to its last,
/// without the whitespace around it.
pub(crate) fn members<'a, const N: usize>(text: &'a str, keys: [&str; N]) -> Option<[Option<&'a str>; N]> {
    object::<false, N>(text, keys)
}

/// Whether serde_json reads `text` as a `Map<String, Value>`: `true` is sure, `false` means ask it.
pub(crate) fn is_value_object(text: &str) -> bool {
    object::<true, 0>(text, []).is_some()
}

/// [`members`] of a text that serde_json reads as a `Map<String, Value>` (the checks of
/// [`is_value_object`]), `None` for anything else and for a text with a key written with escapes
/// (serde_json reads `"ty\u0070e"` as the key `type`).
pub(crate) fn value_members<'a, const N: usize>(text: &'a str, keys: [&str; N]) -> Option<[Option<&'a str>; N]> {
    object::<true, N>(text, keys)
}

/// The object scan; `VALUE`: read as a `Value` (see the module).
fn object<'a, const VALUE: bool, const N: usize>(text: &'a str, keys: [&str; N]) -> Option<[Option<&'a str>; N]> {
    let b = text.as_bytes();
    let mut found = [None; N];
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let key_end = string_end::<VALUE>(b, i)?;
            let key = b.get(i + 1..key_end - 1)?;
            if (!VALUE || N > 0) && key.contains(&b'\\') {
                return None;
            }
            i = value_start(b, key_end)?;
            let end = value_end::<VALUE>(b, i)?;
            if let Some(k) = keys.iter().position(|k| k.len() == key.len() && k.as_bytes() == key) {
                if found[k].is_some() {
                    return None;
                }
                found[k] = Some(text.get(i..end)?);
            }
            i = skip_ws(b, end);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(b, i) == b.len()).then_some(found)
}

/// Past JSON whitespace from `i`.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// From just after a member's key: past the colon and the whitespace, where its value starts.
fn value_start(b: &[u8], i: usize) -> Option<usize> {
    let i = skip_ws(b, i);
    (b.get(i) == Some(&b':')).then(|| skip_ws(b, i + 1))
}

/// Just past the value that starts at `i` (arrays and objects followed to `MAX_DEPTH`, or
/// `MAX_VALUE_DEPTH` for a `Value`).
fn value_end<const VALUE: bool>(b: &[u8], mut i: usize) -> Option<usize> {
    let max_depth = if VALUE { MAX_VALUE_DEPTH } else { MAX_DEPTH };
    // Bit d of `objects`: whether the container open at depth d is an object.
    let mut objects = [0u64; MAX_DEPTH / 64];
    let mut depth = 0;
    loop {
        match *b.get(i)? {
            open @ (b'{' | b'[') => {
                let object = open == b'{';
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(if object { &b'}' } else { &b']' }) {
                    i += 1;
                } else {
                    if depth == max_depth {
                        return None;
                    }
                    let (word, bit) = (depth / 64, 1u64 << (depth % 64));
                    objects[word] = if object { objects[word] | bit } else { objects[word] & !bit };
                    depth += 1;
                    if object {
                        i = value_start(b, string_end::<VALUE>(b, i)?)?;
                    }
                    continue;
                }
            }
            b'"' => i = string_end::<VALUE>(b, i)?,
            b't' => i = literal(b, i, b"true")?,
            b'f' => i = literal(b, i, b"false")?,
            b'n' => i = literal(b, i, b"null")?,
            b'-' | b'0'..=b'9' => i = number_end::<VALUE>(b, i)?,
            _ => return None,
        }
        // Past a value: close the containers it ends, or go on to the next member or element.
        loop {
            if depth == 0 {
                return Some(i);
            }
            let object = objects[(depth - 1) / 64] & (1 << ((depth - 1) % 64)) != 0;
            i = skip_ws(b, i);
            match *b.get(i)? {
                b',' => {
                    i = skip_ws(b, i + 1);
                    if object {
                        i = value_start(b, string_end::<VALUE>(b, i)?)?;
                    }
                    break;
                }
                b'}' if object => {}
                b']' if !object => {}
                _ => return None,
            }
            depth -= 1;
            i += 1;
        }
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    (b.get(i..i + word.len())? == word).then_some(i + word.len())
}

/// Just past the number at `i`: `-`? (`0` | [1-9][0-9]*) (`.` [0-9]+)? ([eE] [+-]? [0-9]+)?, as
/// serde_json's `ignore_integer` reads it (its range is not checked: serde_json does not check an
/// ignored number's either). For a `Value`: no exponent, at most 20 characters (so in range).
fn number_end<const VALUE: bool>(b: &[u8], mut i: usize) -> Option<usize> {
    let start = i;
    let digits = |mut i: usize| {
        while let Some(b'0'..=b'9') = b.get(i) {
            i += 1;
        }
        i
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        if VALUE {
            return None;
        }
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits(i);
        if end == i {
            return None;
        }
        i = end;
    }
    (!VALUE || i - start <= 20).then_some(i)
}

/// Just past the string whose opening quote is at `i`: no control characters in it, and each
/// escape one of `\" \\ \/ \b \f \n \r \t \uXXXX` (any four hex digits: serde_json checks no more
/// of a string it ignores; for a `Value`, not a surrogate's).
fn string_end<const VALUE: bool>(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut i = i + 1;
    loop {
        i = special(b, i);
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => match *b.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' if hex4(b.get(i + 2..i + 6)?).is_some_and(|u| !VALUE || !(0xd800..0xe000).contains(&u)) => i += 6,
                _ => return None,
            },
            _ => return None,
        }
    }
}

/// Four hex digits' value.
fn hex4(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0, |n, &d| Some(n * 16 + char::from(d).to_digit(16)?))
}

/// The first quote, backslash or control character from `i` (or the end). The first sixteen
/// bytes eight at a time, as serde_json's own scan (the keys and short values of a request end
/// there); a longer string by memchr to its next quote or backslash, many bytes at a time, and a
/// vectorised check of that run for control characters: a prompt of some kilobytes costs 1.5
/// instructions a byte, against 2.1 for the word at a time and more for serde_json (a vectorised
/// test of sixteen-byte blocks, without memchr, cost 1.7).
#[inline(always)]
fn special(b: &[u8], i: usize) -> usize {
    match b.get(i..i + 8).map(<[u8; 8]>::try_from) {
        Some(Ok(word)) => match word_special(u64::from_le_bytes(word)) {
            Some(at) => i + at,
            None => special_after(b, i + 8),
        },
        _ => special_after(b, i),
    }
}

/// [`special`] past its first word: another word, then memchr and the check for control characters.
#[inline(never)]
fn special_after(b: &[u8], mut i: usize) -> usize {
    if let Some(Ok(word)) = b.get(i..i + 8).map(<[u8; 8]>::try_from) {
        if let Some(at) = word_special(u64::from_le_bytes(word)) {
            return i + at;
        }
        i += 8;
    }
    let rest = b.get(i..).unwrap_or_default();
    let run = &rest[..memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len())];
    // No early exit, so that the compiler vectorises it.
    if run.iter().fold(false, |any, &c| any | (c < 0x20)) {
        i + run.iter().position(|&c| c < 0x20).unwrap_or(run.len())
    } else {
        i + run.len()
    }
}

/// The place of the first quote, backslash or control character (the bytes serde_json escapes)
/// among eight bytes, little-endian in `w`, if any. In each term below the high bit of a byte is set
/// where that byte matches; a borrow may also mark bytes after the first match, never before it, so
/// the lowest marked byte is exact. (Also the JSON writer's escape test, `json_out`.)
pub(super) fn word_special(w: u64) -> Option<usize> {
    const ONES: u64 = u64::MAX / 255;
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = w ^ (ONES * u64::from(b'"'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    let special = (control | quote | backslash) & (ONES << 7);
    (special != 0).then(|| special.trailing_zeros() as usize / 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use serde_json::value::RawValue;

    /// What serde_json reads from the same text, for comparison: the members as `RawValue`s of a
    /// struct that ignores the rest (as `request::parse` reads them).
    #[derive(Deserialize)]
    struct Serde<'a> {
        #[serde(borrow, default, deserialize_with = "crate::request::present")]
        a: Option<&'a RawValue>,
        #[serde(borrow, default, deserialize_with = "crate::request::present")]
        b: Option<&'a RawValue>,
    }

    fn serde_members(text: &str) -> Option<[Option<&str>; 2]> {
        let s: Serde<'_> = serde_json::from_str(text).ok()?;
        Some([s.a.map(RawValue::get), s.b.map(RawValue::get)])
    }

    /// The scan never accepts a text serde_json refuses, and reads the members serde_json reads.
    fn agrees(text: &str) -> Result<(), TestCaseError> {
        if let Some(scanned) = members(text, ["a", "b"]) {
            prop_assert_eq!(Some(scanned), serde_members(text), "{}", text);
        }
        Ok(())
    }

    #[test]
    fn golden() {
        let t = r#" { "a" : [1, {"x": "y\n\u00e9"}, -0.5e+3, true, null] , "c": {}, "b":"q\"" } "#;
        assert_eq!(
            members(t, ["a", "b", "z"]),
            Some([Some(r#"[1, {"x": "y\n\u00e9"}, -0.5e+3, true, null]"#), Some(r#""q\"""#), None])
        );
        assert_eq!(members("{}", ["a"]), Some([None]));
        assert_eq!(members("{\"a\":1e999}", ["a"]), Some([Some("1e999")]), "an ignored number's range is not checked");
        assert_eq!(
            members("{\"a\":\"\\ud800\"}", ["a"]),
            Some([Some("\"\\ud800\"")]),
            "nor an ignored string's escapes"
        );
        for refused in [
            "",
            "[]",
            "{",
            "{\"a\":1,}",
            "{\"a\":1}x",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":-}",
            "{\"a\":1e}",
            "{\"a\":[1,]}",
            "{\"a\":{\"x\"}}",
            "{\"a\":\"\t\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12g4\"}",
            "{\"a\":tru}",
            "{a:1}",
            "{\"a\":1,\"a\":2}",
            "{\"\\u0061\":1}",
            "{\"a\":[1}",
            "{\"a\":{\"x\":1]}",
            "{\"a\":\"unterminated}",
        ] {
            assert_eq!(members(refused, ["a"]), None, "{refused}");
        }
        let long = "x".repeat(40);
        assert_eq!(
            members(&format!("{{\"a\":\"{long}\\n{long}\"}}"), ["a"]),
            Some([Some(&*format!("\"{long}\\n{long}\""))])
        );
        for refused in [
            format!("{{\"a\":\"{long}\u{1}\"}}"),
            format!("{{\"a\":\"{long}\\n{long}\t\"}}"),
            format!("{{\"a\":\"{long}"),
        ] {
            assert_eq!(members(&refused, ["a"]), None, "{refused}");
        }
        let deep = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert!(members(&deep(MAX_DEPTH), ["a"]).is_some());
        assert_eq!(members(&deep(MAX_DEPTH + 1), ["a"]), None, "deeper goes to serde_json");
        assert!(serde_members(&deep(MAX_DEPTH + 1)).is_some(), "which accepts it");
        for text in [deep(3), deep(MAX_DEPTH)].iter().map(String::as_str).chain([t, "{\"b\": \"\\\\\"}"]) {
            agrees(text).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// A JSON value built from `leaf`s, nested up to four deep.
    fn value(leaf: BoxedStrategy<String>) -> impl Strategy<Value = String> {
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(" , "))),
                prop::collection::vec(("[abz]{1,2}", inner), 0..4).prop_map(|m| object_text(&m)),
            ]
        })
    }

    fn object_text(members: &[(String, String)]) -> String {
        format!("{{{}}}", members.iter().map(|(k, v)| format!("\n\"{k}\" : {v}")).collect::<Vec<_>>().join(","))
    }

    /// Without its newlines, when `flat` (texts as compact as SDKs write them, and pretty-printed).
    fn flatten(text: String, flat: bool) -> String {
        if flat {
            text.replace('\n', " ")
        } else {
            text
        }
    }

    fn valid_leaf() -> BoxedStrategy<String> {
        prop_oneof![
            Just("null".to_owned()),
            Just("false".to_owned()),
            "-?(0|[1-9][0-9]{0,3})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?",
            "\"([a-z é/]|\\\\[\"\\\\/bfnrt]|\\\\u[0-9a-fA-F]{4}){0,40}\"",
        ]
        .boxed()
    }

    /// Valid objects whose top-level keys are plain and distinct: the scan must take every one.
    fn valid_objects() -> impl Strategy<Value = String> {
        (prop::collection::btree_map("[abc]", value(valid_leaf()), 0..4), any::<bool>())
            .prop_map(|(m, flat)| flatten(object_text(&m.into_iter().collect::<Vec<_>>()), flat))
    }

    /// What serde_json says of the text read as an object of `Value`s.
    fn serde_value_object(text: &str) -> bool {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).is_ok()
    }

    /// The members `value_members` finds are the values serde_json reads for those keys.
    fn value_members_agree(text: &str) -> Result<(), TestCaseError> {
        if let Some(found) = value_members(text, ["a", "b"]) {
            let map = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text);
            prop_assert!(map.is_ok(), "{}", text);
            let map = map.unwrap_or_default();
            for (key, raw) in ["a", "b"].into_iter().zip(found) {
                let raw = raw.map(|r| serde_json::from_str::<serde_json::Value>(r).ok());
                prop_assert_eq!(raw, map.get(key).map(|v| Some(v.clone())), "{}", text);
            }
        }
        Ok(())
    }

    #[test]
    fn golden_value_members() {
        let t = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a \"b\" \u00e9"}}"#;
        assert_eq!(
            value_members(t, ["type", "delta"]),
            Some([Some(r#""content_block_delta""#), Some(r#"{"type":"text_delta","text":"a \"b\" \u00e9"}"#)])
        );
        for unsure in [
            r#"{"ty\u0070e": "x"}"#,         // serde_json reads the key `type`
            r#"{"type": "x", "type": "y"}"#, // serde_json keeps the last
            r#"{"type": "\ud800"}"#,         // serde_json refuses a lone surrogate
            r#"{"type": 1e5}"#,
            r#"{"type": "x""#,
        ] {
            assert_eq!(value_members(unsure, ["type"]), None, "{unsure}");
        }
        assert!(is_value_object(r#"{"ty\u0070e": "x"}"#), "an escaped key is fine when no key is asked for");
        for text in [t, r#"{"a": [1, {"b": 2}], "b": "\n"}"#, r#"{"c": 1}"#] {
            value_members_agree(text).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn golden_value_objects() {
        for sure in [
            "{}",
            r#" {"plan": "pro", "n": -1.5, "big": 99999999999999999999, "ok": true, "x": null, "l": [1, {"a": []}]} "#,
            r#"{"e": "\u00e9\n", "e": "twice", "k\u0065y": 1}"#,
        ] {
            assert!(is_value_object(sure), "{sure}");
            assert!(serde_value_object(sure), "{sure}");
        }
        // Refused by serde_json, or not sure: serde_json decides.
        for unsure in
            [r#"{"a": 1e999}"#, r#"{"a": 1e5}"#, r#"{"a": "\ud800"}"#, r#"{"a": "\ud83d\ude00"}"#, "[1]", r#"{"a": 1"#]
        {
            assert!(!is_value_object(unsure), "{unsure}");
        }
        let deep = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert!(is_value_object(&deep(MAX_VALUE_DEPTH)));
        assert!(!is_value_object(&deep(MAX_VALUE_DEPTH + 1)));
        assert!(!serde_value_object(&deep(200)), "serde_json's own limit");
    }

    /// JSON-ish texts: objects with noise among their values and escaped or repeated keys, then
    /// one byte changed or inserted, or the text cut short (or none of these).
    fn texts() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            4 => valid_leaf(),
            1 => "\"([a-z\"\\\\\n\t]|\\\\[xu0-9a-f]{1,5}){0,6}\"",
            1 => "[ \t\n\r]{0,2}[-+.eE0-9a-z\"\\\\,:\\[\\]{}]{1,4}",
        ]
        .boxed();
        let object = prop::collection::vec(("[abc]|\\\\u0061|a\\\\n", value(leaf)), 0..5).prop_map(|m| object_text(&m));
        // A byte that means something to JSON, more often than not.
        let byte = prop_oneof![3 => prop::sample::select(b"0123{}[],:\\\"eE.-+ \t\n\x01ux".to_vec()), 1 => any::<u8>()];
        (object, any::<bool>(), any::<prop::sample::Index>(), byte, 0..5u8).prop_map(|(text, flat, at, byte, how)| {
            let mut bytes = flatten(text, flat).into_bytes();
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                match how {
                    0 => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    2 => bytes.truncate(at),
                    _ => {}
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]
        #[test]
        fn never_accepts_what_serde_refuses_and_reads_the_same_members(text in texts()) {
            agrees(&text)?;
            if is_value_object(&text) {
                prop_assert!(serde_value_object(&text), "{}", text);
            }
            value_members_agree(&text)?;
        }

        #[test]
        fn takes_every_valid_object_with_plain_keys(text in valid_objects()) {
            prop_assert!(members(&text, ["a", "b"]).is_some(), "{}", text);
            agrees(&text)?;
            prop_assert!(!is_value_object(&text) || serde_value_object(&text), "{}", text);
            if !text.contains("\\u") && !text.contains(['e', 'E']) {
                prop_assert!(is_value_object(&text), "{}", text);
            }
        }
    }

    #[test]
    fn takes_the_usual_request() {
        let body = r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi \"there\"\n"}],"temperature":0.2,"max_tokens":256,"stream":true,"metadata":{"user_id":"u-1"}}"#;
        assert_eq!(
            members(body, ["model", "stream", "metadata"]),
            Some([Some("\"m\""), Some("true"), Some(r#"{"user_id":"u-1"}"#)])
        );
    }
}
