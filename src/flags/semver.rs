//! Semver parsing and ranges for the `semver_*` operators, as posthog-python's `parse_semver`:
//! whitespace and a leading `v` stripped, pre-release/build cut, missing parts are 0.

/// A parsed `(major, minor, patch)` triple; ordering is the tuple ordering.
pub type Version = (u64, u64, u64);

/// Parses one numeric part: all ASCII digits, no leading zero unless it is `"0"`.
fn part(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// Strips whitespace, one leading `v`/`V` and anything from the first `-` or `+`.
fn core(s: &str) -> &str {
    let t = s.trim();
    let t = t.strip_prefix(['v', 'V']).unwrap_or(t);
    t.split(['-', '+']).next().unwrap_or("")
}

/// `parse_semver`: `None` where Python raises (which makes the match inconclusive).
pub fn parse(s: &str) -> Option<Version> {
    let mut it = core(s).split('.');
    let major = part(it.next()?)?;
    let minor = match it.next() {
        Some(p) => part(p)?,
        None => 0,
    };
    let patch = match it.next() {
        Some(p) => part(p)?,
        None => 0,
    };
    Some((major, minor, patch))
}

/// Half-open range `[lo, hi)`.
pub type Range = (Version, Version);

/// `~x.y.z`: `[x.y.z, x.(y+1).0)`.
pub fn tilde(s: &str) -> Option<Range> {
    let v = parse(s)?;
    Some((v, (v.0, v.1.checked_add(1)?, 0)))
}

/// `^x.y.z`: `[x.y.z, (x+1).0.0)` if x>0, `[0.y.z, 0.(y+1).0)` if y>0, else `[0.0.z, 0.0.(z+1))`.
pub fn caret(s: &str) -> Option<Range> {
    let v = parse(s)?;
    let hi = if v.0 > 0 {
        (v.0.checked_add(1)?, 0, 0)
    } else if v.1 > 0 {
        (0, v.1.checked_add(1)?, 0)
    } else {
        (0, 0, v.2.checked_add(1)?)
    };
    Some((v, hi))
}

/// `1.*` → `[1.0.0, 2.0.0)`, `1.2.*` → `[1.2.0, 1.3.0)`, `1.2.3` → `[1.2.3, 1.2.4)`.
pub fn wildcard(s: &str) -> Option<Range> {
    let parts: Vec<&str> = core(s).split('.').take_while(|p| *p != "*" && *p != "x" && *p != "X").collect();
    let nums: Option<Vec<u64>> = parts.iter().take(3).map(|p| part(p)).collect();
    match nums?.as_slice() {
        [x] => Some(((*x, 0, 0), (x.checked_add(1)?, 0, 0))),
        [x, y] => Some(((*x, *y, 0), (*x, y.checked_add(1)?, 0))),
        [x, y, z] => Some(((*x, *y, *z), (*x, *y, z.checked_add(1)?))),
        _ => None,
    }
}

/// `lo <= v < hi`.
pub fn in_range(v: Version, r: Range) -> bool {
    r.0 <= v && v < r.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_follows_posthog_python_rules() {
        assert_eq!(parse(" v1.2.3-alpha+b "), Some((1, 2, 3)));
        assert_eq!(parse("1.2"), Some((1, 2, 0)));
        assert_eq!(parse("1.2.3.4"), Some((1, 2, 3)));
        assert_eq!(parse("01.2.3"), None);
        assert_eq!(parse("1..3"), None);
        assert_eq!(parse("abc"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn ranges_match_the_spec() {
        assert_eq!(tilde("1.2.3"), Some(((1, 2, 3), (1, 3, 0))));
        assert_eq!(caret("1.2.3"), Some(((1, 2, 3), (2, 0, 0))));
        assert_eq!(caret("0.2.3"), Some(((0, 2, 3), (0, 3, 0))));
        assert_eq!(caret("0.0.3"), Some(((0, 0, 3), (0, 0, 4))));
        assert_eq!(wildcard("1.*"), Some(((1, 0, 0), (2, 0, 0))));
        assert_eq!(wildcard("1.2.*"), Some(((1, 2, 0), (1, 3, 0))));
        assert_eq!(wildcard("1.2.3"), Some(((1, 2, 3), (1, 2, 4))));
        assert_eq!(wildcard("*"), None);
    }
}
