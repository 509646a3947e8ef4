//! Finding one top-level member of a JSON object (the `usage` of a reply) by a structural scan:
//! strings are skipped with memchr and nesting is counted, instead of parsing every value as serde
//! must. Whatever the scan cannot settle exactly as serde would (not an object, an escaped key, a
//! duplicate member, unbalanced text) is left to serde.
//!
//! LLM replies put `usage` at or near their end, so the key's occurrences are tried from the last:
//! an occurrence whose quotes are not escaped is a key (in valid JSON nothing else can be), and it
//! is the top level's when the text after its value closes exactly one object, at the very end.
//! Only when no occurrence proves itself so does the scan start from the beginning. The
//! occurrences are found by memchr's forward searcher (vectorised; its reverse one is not, and
//! cost four instructions a byte).

/// What the scan found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Member<'a> {
    /// The member's value, as its raw JSON text.
    Found(&'a [u8]),
    /// The object has no such member at the top level.
    Absent,
    /// Not settled here: parse the body with serde.
    Unsure,
}

fn skip_ws(body: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = body.get(i) {
        i += 1;
    }
    i
}

/// The index of the quote that closes the string whose contents start at `i`.
fn string_end(body: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let at = i + memchr::memchr2(b'"', b'\\', body.get(i..)?)?;
        if body[at] == b'"' {
            return Some(at);
        }
        i = at + 2; // an escape: the next byte is never the closing quote
    }
}

/// A member name to look for, with its searcher built once.
pub(crate) struct Key {
    name: &'static [u8],
    finder: memchr::memmem::Finder<'static>,
}

impl Key {
    pub(crate) fn new(name: &'static [u8]) -> Self {
        Key { name, finder: memchr::memmem::Finder::new(name) }
    }
}

/// `usage`.
pub(crate) static USAGE: std::sync::LazyLock<Key> = std::sync::LazyLock::new(|| Key::new(b"usage"));

/// The top-level member `key` of the JSON object `body`. The rest of the text is only checked for
/// balance, not parsed: a body broken elsewhere may still give its member here.
pub(crate) fn top_level<'a>(body: &'a [u8], key: &Key) -> Member<'a> {
    from_the_end(body, key).unwrap_or_else(|| {
        let i = skip_ws(body, 0);
        if body.get(i) != Some(&b'{') {
            return Member::Unsure;
        }
        scan(body, key.name, i + 1, 1, true, None)
    })
}

/// How many occurrences of the key, from the last, are tried before scanning from the start.
const FROM_THE_END_TRIES: usize = 4;

/// The member, when one of the last occurrences of `key` proves to be the top level's.
fn from_the_end<'a>(body: &'a [u8], key: &Key) -> Option<Member<'a>> {
    // Serde's verdict on an earlier top-level duplicate is an error, so an answer is only given
    // when the occurrence that proves itself is the first one: with more occurrences than tries,
    // none of the tried ones can be.
    let mut occurrences = [0; FROM_THE_END_TRIES];
    let mut n = 0;
    for at in key.finder.find_iter(body) {
        *occurrences.get_mut(n)? = at;
        n += 1;
    }
    for (k, &at) in occurrences[..n].iter().enumerate().rev() {
        let Some(found) = at_top_level(body, key.name, at) else { continue };
        // A duplicate spelled with `\u` escapes is an occurrence the searcher cannot see: with one
        // possible in the text before, only the scan from the start can tell.
        let before = &body[..at];
        let escapes = memchr::memchr_iter(b'\\', before).any(|i| before.get(i + 1) == Some(&b'u'));
        return (!escapes && k == 0).then_some(found);
    }
    None
}

/// The member's value, if the occurrence of `name` at `at` is a key whose value the text after
/// closes exactly one object deep, at the very end: then it is a top-level key.
fn at_top_level<'a>(body: &'a [u8], name: &[u8], at: usize) -> Option<Member<'a>> {
    let open = at.checked_sub(1)?;
    let close = at + name.len();
    if body[open] != b'"' || body.get(close) != Some(&b'"') || escaped(body, open) {
        return None;
    }
    let colon = skip_ws(body, close + 1);
    if body.get(colon) != Some(&b':') {
        return None;
    }
    let start = skip_ws(body, colon + 1);
    // From inside the value, as if one object deep: a key nested deeper closes an object before
    // the end, and a later top-level duplicate is seen.
    let found = scan(body, name, start, 1, false, Some((start, None)));
    matches!(found, Member::Found(_)).then_some(found)
}

/// Whether the quote at `i` is escaped (an odd number of backslashes before it).
fn escaped(body: &[u8], i: usize) -> bool {
    body[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// The structural scan from `i`, `depth` objects and arrays deep, expecting a key or not; `found`:
/// the start of the member's value (and its end once known), when already seen.
fn scan<'a>(
    body: &'a [u8],
    key: &[u8],
    mut i: usize,
    mut depth: usize,
    mut expect_key: bool,
    mut found: Option<(usize, Option<usize>)>,
) -> Member<'a> {
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => {
                let Some(end) = string_end(body, i + 1) else { return Member::Unsure };
                if depth == 1 && expect_key {
                    expect_key = false;
                    let name = &body[i + 1..end];
                    if name.contains(&b'\\') {
                        return Member::Unsure; // an escaped key may spell `key`: serde decodes it
                    }
                    if name == key {
                        if found.is_some() {
                            return Member::Unsure; // a duplicate: serde's verdict
                        }
                        let colon = skip_ws(body, end + 1);
                        if body.get(colon) != Some(&b':') {
                            return Member::Unsure;
                        }
                        let start = skip_ws(body, colon + 1);
                        found = Some((start, None));
                        i = start;
                        continue;
                    }
                }
                i = end + 1;
            }
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    if let Some((start, None)) = found {
                        found = Some((start, Some(i)));
                    }
                    if skip_ws(body, i + 1) != body.len() {
                        return Member::Unsure; // text after the object
                    }
                    return match found {
                        Some((start, Some(end))) => Member::Found(body[start..end].trim_ascii_end()),
                        _ => Member::Absent,
                    };
                }
                i += 1;
            }
            b',' if depth == 1 => {
                if let Some((start, None)) = found {
                    found = Some((start, Some(i)));
                }
                expect_key = true;
                i += 1;
            }
            _ => i += 1,
        }
    }
    Member::Unsure // the object never closed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn find(text: &str) -> Member<'_> {
        top_level(text.as_bytes(), &USAGE)
    }

    #[test]
    fn golden() {
        let found = |t| match find(t) {
            Member::Found(v) => Some(std::str::from_utf8(v).unwrap().to_owned()),
            _ => None,
        };
        assert_eq!(found(r#"{"id":"x","usage":{"a":1},"z":2}"#).as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(
            found(" {\"usage\" : {\"a\": [1, {\"b\": \"}\"}]} } \n").as_deref(),
            Some(r#"{"a": [1, {"b": "}"}]}"#)
        );
        assert_eq!(found(r#"{"usage":null}"#).as_deref(), Some("null"));
        assert_eq!(find(r#"{"choices":[{"usage":{"a":1}}],"id":"\"usage\":"}"#), Member::Absent);
        assert_eq!(find(r#"{"s":"a \\\" b \\\\","usage":7}"#), Member::Found(b"7"));
        assert_eq!(find(r#"{"x":1}"#), Member::Absent);
        // Found from the end past a nested key, a value spelled like the key and an escaped one.
        assert_eq!(
            found(r#"{"usage":{"n":1},"choices":[{"usage":2}],"t":"usage","e":"\"usage\":3}"}"#).as_deref(),
            Some(r#"{"n":1}"#)
        );
        assert_eq!(find(r#"{"a":[{"usage":1}],"b":2}"#), Member::Absent);
        // A reply's usage, last or nearly, is settled from the end without the scan from the start.
        let reply = br#"{"id":"x","choices":[{"message":{"content":"a\nb \"q\""}}],"usage":{"a":1},"fp":"y"}"#;
        assert_eq!(from_the_end(reply, &USAGE), Some(Member::Found(br#"{"a":1}"#)));
        assert_eq!(from_the_end(br#"{"a":{"usage":1}}"#, &USAGE), None, "nested");
        assert_eq!(from_the_end(br#"{"usage":1,"usage":2}"#, &USAGE), None, "a duplicate before");
        assert_eq!(from_the_end(br#"{"\u0075sage":1,"usage":2}"#, &USAGE), None, "an escaped key before");
        assert_eq!(find(r#"{"a":"\\","usage":5}"#), Member::Found(b"5"));
        assert_eq!(find(r#"{}"#), Member::Absent);
        for unsure in [
            r#"[{"usage":1}]"#,
            r#"{"usage":1,"usage":2}"#,
            r#"{"\u0075sage":1}"#,
            r#"{"usage":{"a":1}"#,
            r#"{"usage":1} trailing"#,
            r#"{"usage" 1}"#,
            r#"{"unterminated"#,
            "<html>bad gateway</html>",
            "",
        ] {
            assert_eq!(find(unsure), Member::Unsure, "{unsure}");
        }
    }

    /// JSON values with `usage` keys at every depth and strings full of quotes and backslashes.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z\"\\\\{}\\[\\]:, ]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec((prop_oneof![Just("usage".to_owned()), "[a-z\"]{0,5}"], inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// On any valid JSON text the scan agrees with serde: the same member, or none.
        #[test]
        fn agrees_with_serde(v in value(), pretty in any::<bool>()) {
            let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap();
            let expected = v.as_object().and_then(|o| o.get("usage")).cloned();
            match top_level(text.as_bytes(), &USAGE) {
                Member::Found(raw) => prop_assert_eq!(Some(serde_json::from_slice::<Value>(raw).unwrap()), expected),
                Member::Absent => prop_assert_eq!(expected, None),
                // Left to serde only for what is not an object, or for an escaped key.
                Member::Unsure => prop_assert!(!v.is_object() || text.contains('\\'), "left unsure: {}", text),
            }
        }
    }
}
