//! Reading JSON without building a `serde_json::Value`, as leniently as the `Value` accessors
//! (`get(..).and_then(Value::as_str)`) read it, and accepting exactly the texts `Value` accepts:
//! `Checked` reads a value and keeps nothing; `Loose` keeps a string or an unsigned integer and
//! nothing else; a `LooseObject` is a struct read member by member from an object. Used where a
//! whole text is read for a few fields: a translated response, a reply's usage, the identity headers.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// Implements the non-container visits of a lenient visitor: each reads as `$value` (`@numbers`:
/// only booleans and numbers).
macro_rules! scalars_read_as {
    (@numbers $value:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
    ($value:expr) => {
        scalars_read_as!(@numbers $value);
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// Implements the string visits of a visitor: a string reads as `$variant(Cow<str>)`, borrowed
/// from the text when it has no escapes.
macro_rules! strings_read_as {
    ($variant:path) => {
        fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
            Ok($variant(Cow::Borrowed(s)))
        }
        fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
            Ok($variant(Cow::Owned(s.to_owned())))
        }
        fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
            Ok($variant(Cow::Owned(s)))
        }
    };
}

pub(crate) use {scalars_read_as, strings_read_as};

/// Reads `T` from a whole JSON text: from the text as `str` when it is UTF-8 (the usual case:
/// serde_json's slice reader checks the UTF-8 of every key and string it reads again), else from
/// the bytes, so invalid UTF-8 gets the slice reader's verdict and error as before.
pub fn from_bytes<'a, T: Deserialize<'a>>(raw: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(raw) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(raw),
    }
}

/// A JSON object read as `Map<String, Value>` reads it and dropped (`Checked` for its members);
/// anything else is refused with serde's words ("expected a map").
pub struct CheckedObject;

impl<'de> Deserialize<'de> for CheckedObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(Checked).map(|_| CheckedObject)
    }
}

/// Any JSON value, read as `Value` reads it (UTF-8 strings, numbers in range, the same nesting
/// limit) and dropped: the same errors as parsing it, without allocating.
pub struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Also serde's words when a whole text must be an object (`CheckedObject`).
        f.write_str("a map")
    }
    scalars_read_as!(Checked);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// A JSON value of which only a string or an unsigned integer is kept (borrowed from the text when
/// it has no escapes): what `Value::as_str` and `Value::as_u64` would give.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Loose<'a> {
    Str(Cow<'a, str>),
    U64(u64),
    /// Anything else (`null`, a bool, a signed or fractional number, an array, an object) or absent.
    #[default]
    Other,
}

impl<'a> Loose<'a> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Loose::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Loose::U64(n) => Some(*n),
            _ => None,
        }
    }

    pub fn into_str(self) -> Option<Cow<'a, str>> {
        match self {
            Loose::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    strings_read_as!(Loose::Str);
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Loose::U64(n))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Checked.visit_seq(seq).map(|_| Loose::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Checked.visit_map(map).map(|_| Loose::Other)
    }
}

/// A struct read from a JSON object member by member, leniently: what is not an object reads as
/// `Default`, and `member` reads (or `skip`s) each member's value. Members come in text order, so
/// for a repeated key the last one wins, as in `Value`.
pub trait LooseObject<'de>: Default {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

/// Reads the current member's value and drops it (for `LooseObject::member`).
pub fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<Checked>().map(drop)
}

/// Reads the current member's value as a token count: an unsigned integer, anything else 0
/// (what `Value::as_u64(..).unwrap_or(0)` gives).
pub fn count<'de, A: MapAccess<'de>>(map: &mut A) -> Result<u64, A::Error> {
    Ok(map.next_value::<Loose<'_>>()?.as_u64().unwrap_or(0))
}

/// `Some(T)` from an object, `None` from anything else (read through, so the text is checked).
pub struct MaybeObject<T>(pub Option<T>);

impl<'de, T: LooseObject<'de>> Deserialize<'de> for MaybeObject<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectVisitor(PhantomData)).map(MaybeObject)
    }
}

/// `T` from an object, `T::default()` from anything else.
pub struct Object<T>(pub T);

impl<'de, T: LooseObject<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        MaybeObject::deserialize(d).map(|MaybeObject(o)| Object(o.unwrap_or_default()))
    }
}

/// The objects of an array (other elements skipped); empty from anything but an array.
pub struct Objects<T>(pub Vec<T>);

impl<'de, T: LooseObject<'de>> Deserialize<'de> for Objects<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Array(elements) = Array::<MaybeObject<T>>::deserialize(d)?;
        Ok(Objects(elements.into_iter().flatten().filter_map(|MaybeObject(o)| o).collect()))
    }
}

/// `Some` of the elements of an array (each read as `T`), `None` from anything else.
pub struct Array<T>(pub Option<Vec<T>>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ArrayVisitor(PhantomData))
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: LooseObject<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    scalars_read_as!(None);
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<T>, A::Error> {
        Checked.visit_seq(seq).map(|_| None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut out = T::default();
        // A key read as `Loose`, not `Cow<str>`: serde's `Cow` always allocates.
        while let Some(key) = map.next_key::<Loose<'de>>()? {
            out.member(key.as_str().unwrap_or(""), &mut map)?;
        }
        Ok(Some(out))
    }
}

struct ArrayVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ArrayVisitor<T> {
    type Value = Array<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    scalars_read_as!(Array(None));
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Array<T>, A::Error> {
        Checked.visit_map(map).map(|_| Array(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Array<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(element) = seq.next_element()? {
            out.push(element);
        }
        Ok(Array(Some(out)))
    }
}
