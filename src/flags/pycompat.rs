//! Python value semantics that posthog-python's matchers rely on: `str()`, `casefold()`,
//! `float()` and truthiness, applied to JSON values so that coercions match byte for byte.

use serde_json::Value;
use std::borrow::Cow;

/// Python truthiness of a JSON value (`None`, `False`, `0`, `""`, `[]`, `{}` are falsy).
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python `str(value)` of a JSON value as `json.loads` would have produced it.
pub fn py_str(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s.as_str()),
        other => Cow::Owned(py_repr_inner(other, false)),
    }
}

fn py_repr_inner(v: &Value, nested: bool) -> String {
    match v {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                py_float_repr(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) if nested => py_str_repr(s),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(|x| py_repr_inner(x, true)).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(o) => {
            let items: Vec<String> =
                o.iter().map(|(k, x)| format!("{}: {}", py_str_repr(k), py_repr_inner(x, true))).collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// Python `repr()` of a string (quote choice as CPython; escapes for the common cases).
fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python `repr(float)`: shortest round-trip digits, fixed notation for exponents in [-4, 16).
pub fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".to_owned() } else { "-inf".to_owned() };
    }
    let sci = format!("{f:e}"); // e.g. "-1.2345e6", "1e-7"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let mut out = String::from(sign);
        if exp >= 0 {
            let int_len = usize::try_from(exp).unwrap_or(0) + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', usize::try_from(-exp - 1).unwrap_or(0)));
            out.push_str(&digits);
        }
        out
    } else {
        let mut m = String::from(&digits[..1]);
        if digits.len() > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

/// Python `str.casefold()` (full folding for ASCII, `ß` and final sigma; `to_lowercase` otherwise).
pub fn casefold(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Cow::Owned(s.to_ascii_lowercase());
        }
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            'ß' | 'ẞ' => out.push_str("ss"),
            'ς' => out.push('σ'),
            c => out.extend(c.to_lowercase()),
        }
    }
    Cow::Owned(out)
}

/// `folded_needle` (already casefolded) occurs in `casefold(hay)`; no allocation for ASCII input.
pub fn icontains(hay: &str, folded_needle: &str) -> bool {
    if hay.is_ascii() && folded_needle.is_ascii() {
        let (h, n) = (hay.as_bytes(), folded_needle.as_bytes());
        if n.is_empty() {
            return true;
        }
        return h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    casefold(hay).contains(folded_needle)
}

/// `casefold(s) == folded` without allocating for ASCII input.
pub fn iequals(s: &str, folded: &str) -> bool {
    if s.is_ascii() {
        return s.eq_ignore_ascii_case(folded) && folded.is_ascii();
    }
    casefold(s) == folded
}

/// Python `float(value)`; `None` where Python raises.
pub fn py_float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => py_float_str(s),
        _ => None,
    }
}

/// Python `float(str)`: surrounding whitespace, `inf`/`nan`, and `_` between digits allowed.
pub fn py_float_str(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    let cleaned: Cow<'_, str> = if t.contains('_') {
        let b = t.as_bytes();
        for (i, c) in b.iter().enumerate() {
            if *c == b'_' {
                let ok = i > 0 && i + 1 < b.len() && b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_digit();
                if !ok {
                    return None;
                }
            }
        }
        Cow::Owned(t.replace('_', ""))
    } else {
        Cow::Borrowed(t)
    };
    let lower = cleaned.to_ascii_lowercase();
    let body = lower.trim_start_matches(['+', '-']);
    if matches!(body, "inf" | "infinity" | "nan")
        || body.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'e' || b == b'+' || b == b'-')
    {
        return cleaned.parse::<f64>().ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn str_of_json_values_matches_python() {
        assert_eq!(py_str(&json!(true)), "True");
        assert_eq!(py_str(&json!(null)), "None");
        assert_eq!(py_str(&json!(1)), "1");
        assert_eq!(py_str(&json!(1.0)), "1.0");
        assert_eq!(py_str(&json!(0.1)), "0.1");
        assert_eq!(py_str(&json!(1e16)), "1e+16");
        assert_eq!(py_str(&json!(123456.5)), "123456.5");
        assert_eq!(py_str(&json!(0.0001)), "0.0001");
        assert_eq!(py_str(&json!(0.00001)), "1e-05");
        assert_eq!(py_str(&json!(["a", 1, true])), "['a', 1, True]");
        assert_eq!(py_str(&json!({"a": "b"})), "{'a': 'b'}");
    }

    #[test]
    fn float_parsing_follows_python() {
        assert_eq!(py_float(&json!("  30 ")), Some(30.0));
        assert_eq!(py_float(&json!("1_000")), Some(1000.0));
        assert_eq!(py_float(&json!("123aloha")), None);
        assert_eq!(py_float(&json!(true)), Some(1.0));
        assert_eq!(py_float(&json!(null)), None);
        assert!(py_float(&json!("-Infinity")).is_some_and(f64::is_infinite));
    }

    #[test]
    fn casefold_handles_sharp_s() {
        assert_eq!(casefold("Straße"), "strasse");
        assert!(iequals("VALUE", "value"));
        assert!(icontains("343tfVaLue5", "value"));
    }
}
