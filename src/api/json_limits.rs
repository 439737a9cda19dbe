//! What a JSON record must be beyond well-formed, so that every reader can
//! parse what it is served: nested at most `MAX_DEPTH` arrays and objects
//! deep, and no string with a lone surrogate escape (`"\ud800"`).
//!
//! serde_json's default recursion limit (128) lets a reader parse at most
//! 127 levels, and a range answer wraps each record three levels deeper
//! (`{"records":[{"value": ..}]}`), hence 124. RFC 8259 §8.2 leaves strings
//! with lone surrogates to each parser (some refuse them, some substitute,
//! some pass them on), so they are refused rather than stored.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The deepest a record's arrays and objects may nest.
pub const MAX_DEPTH: usize = SERDE_JSON_DEFAULT_MAX_LEVELS - RANGE_ANSWER_LEVELS;

/// What `serde_json::from_slice` accepts with its default recursion limit.
const SERDE_JSON_DEFAULT_MAX_LEVELS: usize = 127;
/// `{"records":[{"value": <record>}]}`
const RANGE_ANSWER_LEVELS: usize = 3;

/// Checks one whole JSON document (UTF-8 included: serde_json checks every
/// string, and nothing else may hold a byte above ASCII).
pub fn check_document(bytes: &[u8]) -> Result<(), serde_json::Error> {
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    Levels(0).deserialize(&mut reader)?;
    reader.end()
}

/// Visits a value at a nesting level: strings are decoded (which refuses
/// lone surrogates, as skipping them would not), numbers and the rest are
/// merely read.
#[derive(Clone, Copy)]
struct Levels(usize);

impl Levels {
    fn deeper<E: de::Error>(self) -> Result<Levels, E> {
        if self.0 >= MAX_DEPTH {
            return Err(E::custom(format_args!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(Levels(self.0 + 1))
    }
}

impl<'de> DeserializeSeed<'de> for Levels {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Levels {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        while items.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        // Keys are decoded as strings whatever their visitor, so lone
        // surrogates in keys are refused too.
        while entries.next_key::<IgnoredAny>()?.is_some() {
            entries.next_value_seed(inner)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        "[".repeat(depth) + &"]".repeat(depth)
    }

    #[test]
    fn serde_json_default_limit_is_what_max_depth_assumes() {
        let levels = SERDE_JSON_DEFAULT_MAX_LEVELS;
        assert!(serde_json::from_str::<serde_json::Value>(&nested(levels)).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&nested(levels + 1)).is_err());
    }

    #[test]
    fn depth_is_limited_exactly() {
        assert!(check_document(nested(MAX_DEPTH).as_bytes()).is_ok());
        assert!(check_document(nested(MAX_DEPTH + 1).as_bytes()).is_err());
        let objects = |n| "{\"a\":".repeat(n) + "[]" + &"}".repeat(n);
        assert!(check_document(objects(MAX_DEPTH - 1).as_bytes()).is_ok());
        assert!(check_document(objects(MAX_DEPTH).as_bytes()).is_err());
        assert!(check_document(nested(1_000_000).as_bytes()).is_err());
        let wide = format!("[{}]", vec!["[1,{\"a\":[]}]"; 10_000].join(","));
        assert!(check_document(wide.as_bytes()).is_ok());
    }

    #[test]
    fn lone_surrogates_are_refused_in_values_and_keys() {
        for bad in [
            r#""\ud800""#,
            r#""\udfff""#,
            r#"{"\udbff":1}"#,
            r#"["\ud800\u0041"]"#,
            r#""\ud800\ud800""#,
        ] {
            assert!(check_document(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(check_document(r#"{"😀\ud83d\ude00":"\u00e9"}"#.as_bytes()).is_ok());
    }

    #[test]
    fn every_kind_of_value_passes_and_trailing_data_does_not() {
        let all = r#" {"a":[1,-2,3.5e10,true,false,null,"s",{}],"b":{"c":"\n\"\\"}} "#;
        assert!(check_document(all.as_bytes()).is_ok());
        assert!(check_document(b"{} {}").is_err());
        assert!(check_document(b"\"\xff\"").is_err());
        assert!(check_document(b"[1,]").is_err());
    }
}
