//! What a JSON record must be beyond well-formed, so that every reader can
//! parse what it is served: nested at most `MAX_DEPTH` arrays and objects
//! deep, and no string with a lone surrogate escape (`"\ud800"`).
//!
//! serde_json's default recursion limit (128) lets a reader parse at most
//! 127 levels, and a range answer wraps each record three levels deeper
//! (`{"records":[{"value": ..}]}`), hence 124. RFC 8259 §8.2 leaves strings
//! with lone surrogates to each parser (some refuse them, some substitute,
//! some pass them on), so they are refused rather than stored.
//!
//! Every record of every append passes here, so each check is a pass that
//! vectorizes or jumps between backslashes: serde_json skips over the
//! document (as `IgnoredAny`, which checks syntax but neither depth nor
//! surrogates), brackets are counted and only when there are more than
//! `MAX_DEPTH` is their nesting measured, and only `\u` escapes that start
//! like a surrogate are decoded. Against the skip alone this adds 5-20% for
//! typical records of 60 B to 1.5 KiB, and up to twice as much for records
//! dense with escapes or with more than `MAX_DEPTH` brackets; decoding every
//! string with serde_json instead (which refuses lone surrogates) added
//! 50-130% to typical records.

use serde::de::IgnoredAny;

/// The deepest a record's arrays and objects may nest.
pub const MAX_DEPTH: usize = SERDE_JSON_DEFAULT_MAX_LEVELS - RANGE_ANSWER_LEVELS;

/// What `serde_json::from_slice` accepts with its default recursion limit.
const SERDE_JSON_DEFAULT_MAX_LEVELS: usize = 127;
/// `{"records":[{"value": <record>}]}`
const RANGE_ANSWER_LEVELS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("not UTF-8: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    #[error("{0}")]
    Syntax(#[from] serde_json::Error),
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("a string holds a lone surrogate escape (\\uD800 to \\uDFFF not in a high-low pair)")]
    LoneSurrogate,
}

/// Checks one whole JSON document.
pub fn check_document(bytes: &[u8]) -> Result<(), Refused> {
    // The skipping reader does not look inside strings.
    std::str::from_utf8(bytes)?;
    serde_json::from_slice::<IgnoredAny>(bytes)?;
    if opening_brackets(bytes) > MAX_DEPTH && nests_deeper_than(bytes, MAX_DEPTH) {
        return Err(Refused::TooDeep);
    }
    if has_lone_surrogate(bytes) {
        return Err(Refused::LoneSurrogate);
    }
    Ok(())
}

/// How many `[` and `{` there are, in strings or not: fewer than the limit
/// means no need to look at the nesting. Counted in bytes per chunk of
/// 255 (they cannot overflow) so that the compiler vectorizes the loop;
/// `b | 0x20` is `{` for `[` (0x5b) and `{` (0x7b) only.
fn opening_brackets(json: &[u8]) -> usize {
    json.chunks(255)
        .map(|chunk| chunk.iter().fold(0u8, |n, b| n + u8::from(b | 0x20 == b'{')) as usize)
        .sum()
}

/// Whether valid JSON nests deeper than `limit`: brackets count outside
/// strings.
fn nests_deeper_than(json: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => i = closing_quote(json, i + 1),
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Where the string whose contents start at `i` ends: the next quote not
/// escaped by a backslash.
fn closing_quote(json: &[u8], mut i: usize) -> usize {
    while let Some(found) = memchr::memchr2(b'"', b'\\', json.get(i..).unwrap_or_default()) {
        let at = i + found;
        if json[at] == b'"' {
            return at;
        }
        i = at + 2;
    }
    json.len()
}

/// Whether some `\u` escape of valid JSON is a surrogate (D800-DFFF) not in
/// a high-then-low pair. In valid JSON every backslash begins an escape,
/// unless it is the escaped character of the one before.
fn has_lone_surrogate(json: &[u8]) -> bool {
    let mut may_begin_escape = 0;
    for at in memchr::memchr_iter(b'\\', json) {
        if at < may_begin_escape {
            continue;
        }
        may_begin_escape = at + 2;
        if json.get(at + 1) != Some(&b'u') {
            continue;
        }
        may_begin_escape = at + 6;
        // Most `\u` escapes are not surrogates: `d` and `8` to `f` come first.
        let surrogate_like = json.get(at + 2).is_some_and(|c| c | 0x20 == b'd')
            && json
                .get(at + 3)
                .is_some_and(|c| matches!(c | 0x20, b'8' | b'9' | b'a'..=b'f'));
        if !surrogate_like {
            continue;
        }
        match code_unit(json, at + 2) {
            Some(0xD800..=0xDBFF) => {
                let low = match json.get(at + 6..at + 8) {
                    Some(b"\\u") => code_unit(json, at + 8),
                    _ => None,
                };
                if !matches!(low, Some(0xDC00..=0xDFFF)) {
                    return true;
                }
                may_begin_escape = at + 12;
            }
            Some(0xDC00..=0xDFFF) => return true,
            _ => {}
        }
    }
    false
}

/// The four hex digits at `at`.
fn code_unit(json: &[u8], at: usize) -> Option<u16> {
    let digits = json.get(at..at + 4)?;
    digits.iter().try_fold(0u16, |unit, digit| {
        let value = (*digit as char).to_digit(16)?;
        Some(unit << 4 | value as u16)
    })
}

#[cfg(test)]
mod reference {
    //! serde_json decoding every string and counting levels: slower, and
    //! what the checks above must agree with.

    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

    use super::MAX_DEPTH;

    pub fn accepts(bytes: &[u8]) -> bool {
        let mut reader = serde_json::Deserializer::from_slice(bytes);
        Levels(0).deserialize(&mut reader).is_ok() && reader.end().is_ok()
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

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
            "[\\[\\]{}\"\\\\a\u{e9}\u{1f600}\n]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(140, 400, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::vec(("[\\[{\"\\\\]{0,3}", inner), 0..3)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Strings of escapes, surrogates among them, paired or not.
        #[test]
        fn the_surrogate_scan_agrees_with_decoding(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![r"\ud83d", r"\ude00", r"\uDBFF", r"\uDFFF", r"\u00e9", r"\\", r#"\""#, "u", "d800", r"\n", "a"]),
                0..8,
            )
        ) {
            let text = format!("[\"{}\"]", pieces.concat());
            proptest::prop_assert_eq!(check_document(text.as_bytes()).is_ok(), reference::accepts(text.as_bytes()), "{}", text);
        }

        /// The bracket scan agrees with serde_json decoding under the same limit.
        #[test]
        fn the_fast_depth_scan_agrees_with_decoding(mut value in json_value(), wraps in 110usize..130) {
            // Around the limit, in arrays and in objects whose keys hold brackets.
            for i in 0..wraps {
                value = match i % 2 {
                    0 => serde_json::Value::Array(vec![value]),
                    _ => serde_json::json!({ "{[\\\"": value }),
                };
            }
            let text = serde_json::to_vec(&value).unwrap();
            proptest::prop_assert_eq!(check_document(&text).is_ok(), reference::accepts(&text));
        }
    }

    #[test]
    fn opening_brackets_are_counted_exactly() {
        let all: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let expected = all.iter().filter(|b| matches!(b, b'[' | b'{')).count();
        assert_eq!(opening_brackets(&all), expected);
        assert_eq!(opening_brackets(&[b'['; 1000]), 1000);
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let deep_text = format!("[\"{}\\\"{}\"]", "[".repeat(200), "{".repeat(200));
        assert!(check_document(deep_text.as_bytes()).is_ok(), "{deep_text}");
        let key = format!("{{\"{}\":{}}}", "\\\\".repeat(3), nested(MAX_DEPTH - 1));
        assert!(check_document(key.as_bytes()).is_ok(), "{key}");
        let key = format!("{{\"\\\\\":{}}}", nested(MAX_DEPTH));
        assert!(check_document(key.as_bytes()).is_err(), "{key}");
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
        // An escaped backslash and then text: a false alarm, looked at closer.
        assert!(check_document(r#"["\\ud800"]"#.as_bytes()).is_ok());
        assert!(has_lone_surrogate(br#""\uDBFF""#));
        assert!(has_lone_surrogate(br#""\uD800\uD800\uDC00""#));
        assert!(has_lone_surrogate(br#""\uD800\n\uDC00""#));
        assert!(!has_lone_surrogate(br#""\u00e9\ud7ff\ue000\n\uD800\uDC00""#));
        assert!(!has_lone_surrogate(br#""\\\\uD800""#));
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
