//! Whether bytes are one JSON document a record may hold: the check every
//! appended JSON record (and every NDJSON line) passes before it is stored
//! verbatim.
//!
//! It accepts exactly what `json_limits::check_document` accepts (UTF-8,
//! then serde_json's reader, then `json_limits`' rules; `tests` hold it to
//! that), in one pass and without building anything: JSON's grammar
//! (RFC 8259) with whitespace limited to space, tab, CR and LF, any four
//! hex digits after `\u` except a surrogate not in a high-low pair, no
//! control characters in strings, UTF-8 checked only inside strings
//! (outside them the grammar admits ASCII only), and arrays and objects
//! nested at most `json_limits::MAX_DEPTH` deep, kept in a bit stack.
//!
//! Most of a record's bytes are usually string contents, so strings are
//! skipped 16 bytes at a time (SSE2, which every x86_64 has), 8 at a time
//! elsewhere, up to the next quote, backslash, control or non-ASCII byte.
//! It answers only yes or no: a caller that needs to say why (an error for
//! the client) asks `json_limits`, once, on the way out.

use super::json_limits::MAX_DEPTH;

/// Whether `bytes` is exactly one JSON document, surrounded by optional whitespace.
pub fn is_json(bytes: &[u8]) -> bool {
    let mut scan = Scan { bytes, at: 0 };
    scan.document().is_some()
}

/// What encloses the value being read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Container {
    Array,
    Object,
}

/// The containers open at the current position: one bit each, the first
/// at the bottom. At most `MAX_DEPTH`, so they fit in place.
#[derive(Default)]
struct Nesting {
    bits: u128,
    depth: u32,
}

const _: () = assert!(MAX_DEPTH <= u128::BITS as usize);

impl Nesting {
    /// Whether one more level would be too deep.
    fn full(&self) -> bool {
        self.depth as usize >= MAX_DEPTH
    }

    fn push(&mut self, container: Container) {
        debug_assert!(!self.full(), "checked by the caller");
        let bit = 1u128 << (self.depth % u128::BITS);
        self.bits = if container == Container::Object {
            self.bits | bit
        } else {
            self.bits & !bit
        };
        self.depth += 1;
    }

    fn top(&self) -> Option<Container> {
        let depth = self.depth.checked_sub(1)?;
        let object = self.bits & (1u128 << depth) != 0;
        Some(if object { Container::Object } else { Container::Array })
    }

    fn pop(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
}

/// A position in the bytes being checked; every step answers `None` for
/// "not JSON".
struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Consumes `byte` if it comes next (after whitespace).
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.skip_whitespace();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// A whole document: one value, then nothing but whitespace.
    fn document(&mut self) -> Option<()> {
        let mut nesting = Nesting::default();
        'value: loop {
            self.skip_whitespace();
            match self.peek()? {
                b'{' => {
                    // An empty one is a level too.
                    if nesting.full() {
                        return None;
                    }
                    self.at += 1;
                    self.skip_whitespace();
                    if self.peek() == Some(b'}') {
                        self.at += 1;
                    } else {
                        nesting.push(Container::Object);
                        self.key()?;
                        continue 'value;
                    }
                }
                b'[' => {
                    if nesting.full() {
                        return None;
                    }
                    self.at += 1;
                    self.skip_whitespace();
                    if self.peek() == Some(b']') {
                        self.at += 1;
                    } else {
                        nesting.push(Container::Array);
                        continue 'value;
                    }
                }
                b'"' => {
                    self.at += 1;
                    self.string()?;
                }
                b'n' => self.literal(b"null")?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // A value ended: close containers until one goes on.
            loop {
                self.skip_whitespace();
                let Some(container) = nesting.top() else {
                    return (self.at == self.bytes.len()).then_some(());
                };
                match (self.peek()?, container) {
                    (b',', Container::Array) => {
                        self.at += 1;
                        continue 'value;
                    }
                    (b',', Container::Object) => {
                        self.at += 1;
                        self.key()?;
                        continue 'value;
                    }
                    (b']', Container::Array) | (b'}', Container::Object) => {
                        self.at += 1;
                        nesting.pop();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// An object's key and its colon.
    fn key(&mut self) -> Option<()> {
        self.expect(b'"')?;
        self.string()?;
        self.expect(b':')
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at.checked_add(word.len())?;
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => {
                self.at += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return None;
                }
            }
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    /// The rest of a string whose opening quote is consumed.
    fn string(&mut self) -> Option<()> {
        loop {
            self.at = skip_plain(self.bytes, self.at);
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                b'\\' => {
                    self.at += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            self.at += 1;
                            self.unicode_escape()?;
                        }
                        _ => return None,
                    }
                }
                0x80.. => self.at += utf8_sequence(self.bytes.get(self.at..)?)?,
                // A control character.
                _ => return None,
            }
        }
    }
}

impl Scan<'_> {
    /// The four hex digits at the current position.
    fn code_unit(&mut self) -> Option<u16> {
        let hex = self.bytes.get(self.at..self.at + 4)?;
        let unit = hex.iter().try_fold(0u16, |unit, digit| {
            let value = (*digit as char).to_digit(16)?;
            Some(unit << 4 | value as u16)
        })?;
        self.at += 4;
        Some(unit)
    }

    /// The rest of a `\u` escape after the `u`: a surrogate must be a high
    /// one followed at once by an escaped low one (`json_limits`).
    fn unicode_escape(&mut self) -> Option<()> {
        match self.code_unit()? {
            0xD800..=0xDBFF => {
                if self.bytes.get(self.at..self.at + 2)? != b"\\u" {
                    return None;
                }
                self.at += 2;
                matches!(self.code_unit()?, 0xDC00..=0xDFFF).then_some(())
            }
            0xDC00..=0xDFFF => None,
            _ => Some(()),
        }
    }
}

/// Whether a string's byte needs a closer look: it ends the string, starts
/// an escape, is a control character or is not ASCII.
fn is_special(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || !(0x20..0x80).contains(&byte)
}

/// The position of the first special byte (`is_special`) at or after `at`,
/// or the length of `bytes`.
fn skip_plain(bytes: &[u8], at: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    let at = skip_plain_sse2(bytes, at);
    let at = skip_plain_words(bytes, at);
    let rest = bytes.get(at..).unwrap_or_default();
    at + rest.iter().position(|b| is_special(*b)).unwrap_or(rest.len())
}

/// `skip_plain` 16 bytes at a time; stops at a special byte or where fewer
/// than 16 bytes are left.
#[cfg(target_arch = "x86_64")]
fn skip_plain_sse2(bytes: &[u8], mut at: usize) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    while let Some(chunk) = bytes.get(at..at + 16) {
        // SAFETY: SSE2 is part of the x86_64 baseline, and the unaligned
        // load reads the 16 bytes of `chunk`, which it has.
        let mask = unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // Signed: bytes from 0x80 up are negative, so this catches them too.
            let control_or_high = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control_or_high))
        };
        if mask != 0 {
            return at + mask.trailing_zeros() as usize;
        }
        at += 16;
    }
    at
}

/// `skip_plain` 8 bytes at a time (the portable way); stops before the
/// word that holds a special byte, or where fewer than 8 bytes are left.
fn skip_plain_words(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let has_zero_byte = |w: u64| w.wrapping_sub(ONES) & !w;
    while let Some(chunk) = bytes.get(at..at + 8).and_then(|c| c.first_chunk::<8>()) {
        let w = u64::from_le_bytes(*chunk);
        // A byte below 0x20 borrows into its top bit; one from 0x80 up has it set.
        let control_or_high = w.wrapping_sub(ONES * 0x20) | w;
        let special = (control_or_high | has_zero_byte(w ^ (ONES * u64::from(b'"'))))
            | has_zero_byte(w ^ (ONES * u64::from(b'\\')));
        if special & HIGH != 0 {
            return at;
        }
        at += 8;
    }
    at
}

/// The length of the well-formed UTF-8 sequence (RFC 3629: no overlong
/// forms, no surrogates, nothing past U+10FFFF) that starts `bytes` with a
/// non-ASCII byte, if it is one.
fn utf8_sequence(bytes: &[u8]) -> Option<usize> {
    let continuation = |i: usize| bytes.get(i).is_some_and(|b| (0x80..=0xBF).contains(b));
    let second_in = |lo: u8, hi: u8| bytes.get(1).is_some_and(|b| (lo..=hi).contains(b));
    let len = match *bytes.first()? {
        0xC2..=0xDF => continuation(1).then_some(2),
        0xE0 => second_in(0xA0, 0xBF).then_some(3),
        0xE1..=0xEC | 0xEE..=0xEF => continuation(1).then_some(3),
        0xED => second_in(0x80, 0x9F).then_some(3),
        0xF0 => second_in(0x90, 0xBF).then_some(4),
        0xF1..=0xF3 => continuation(1).then_some(4),
        0xF4 => second_in(0x80, 0x8F).then_some(4),
        _ => None,
    }?;
    (2..len).all(continuation).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use super::super::json_limits;

    /// The reference: serde_json's reader and `json_limits`' rules.
    fn reference_accepts(bytes: &[u8]) -> bool {
        json_limits::check_document(bytes).is_ok()
    }

    fn assert_agrees(bytes: &[u8]) {
        assert_eq!(
            is_json(bytes),
            reference_accepts(bytes),
            "is_json and json_limits disagree on {:?}",
            String::from_utf8_lossy(bytes)
        );
    }

    #[test]
    fn agrees_with_json_limits_on_the_edges() {
        let cases: &[&[u8]] = &[
            b"",
            b" ",
            b"{}",
            b" { } ",
            b"[]",
            b"[ ]",
            b"[1,]",
            b"[,1]",
            b"{\"a\":1,}",
            b"{,}",
            b"{\"a\" : [1, 2, {\"b\": null}], \"c\": \"d\"}",
            b"{\"a\"}",
            b"{\"a\":}",
            b"{1:2}",
            b"{\"a\":1 \"b\":2}",
            b"[1 2]",
            b"[}",
            b"{]",
            b"[[[[]]]]",
            b"[[[[]]]",
            b"]",
            b"null",
            b"nul",
            b"nulll",
            b"true",
            b"True",
            b"false",
            b"falsey",
            b"0",
            b"-0",
            b"00",
            b"01",
            b"-",
            b"-a",
            b"1.",
            b"1.5",
            b".5",
            b"1e",
            b"1e+",
            b"1e-7",
            b"1E+70",
            b"1.5e3",
            b"1.e3",
            b"+1",
            b"1x",
            b"123456789012345678901234567890e999999",
            b"\"\"",
            b"\"abc",
            b"\"a\\\"b\"",
            b"\"\\u00e9\\uD800\\udfff\"",
            b"\"\\u00g0\"",
            b"\"\\u12\"",
            b"\"\\x\"",
            b"\"\\/\\b\\f\\n\\r\\t\\\\\"",
            b"\"tab\there\"",
            b"\"nl\nhere\"",
            b"\"del\x7fhere\"",
            "\"caf\u{e9} \u{4e2d}\u{6587} \u{1f600}\"".as_bytes(),
            b"\"\xc3\x28\"",
            b"\"\xc0\xaf\"",
            b"\"\xe0\x80\xaf\"",
            b"\"\xed\xa0\x80\"",
            b"\"\xf4\x90\x80\x80\"",
            b"\"\xf0\x9f\x98\"",
            b"\xef\xbb\xbf{}",
            b"{}\x0c",
            b"\x0c{}",
            b"{} {}",
            b"1 2",
            b"{}\r\n",
        ];
        for case in cases {
            assert_agrees(case);
        }
        assert!(
            is_json(b"{\"event\":\"signup\"}"),
            "the checks above must accept something"
        );
    }

    #[test]
    fn long_strings_are_checked_at_every_position() {
        // Every special byte at every distance from the start, so that each
        // lane of the 16- and 8-byte paths and the tail is exercised.
        for len in 0..48 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x01, 0x1f, 0x7f, 0x80, 0xc3, 0xff] {
                    let mut doc = vec![b'"'];
                    doc.extend(std::iter::repeat_n(b'x', len));
                    doc[1 + at] = special;
                    doc.push(b'"');
                    assert_agrees(&doc);
                }
            }
        }
    }

    #[test]
    fn nesting_is_limited_at_max_depth_exactly() {
        for depth in [1, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 127, 128, 129, 300, 100_000] {
            let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_agrees(arrays.as_bytes());
            assert_eq!(is_json(arrays.as_bytes()), depth <= MAX_DEPTH, "{depth} arrays");
            let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            assert_agrees(objects.as_bytes());
            let empty_innermost = format!("{}{{}}{}", "{\"a\":".repeat(depth - 1), "}".repeat(depth - 1));
            assert_agrees(empty_innermost.as_bytes());
            assert_eq!(
                is_json(empty_innermost.as_bytes()),
                depth <= MAX_DEPTH,
                "{depth} objects"
            );
            let mixed = format!("{}1{}", "[{\"a\":".repeat(depth), "}]".repeat(depth));
            assert_agrees(mixed.as_bytes());
            let wrong = format!("{}1{}", "[{\"a\":".repeat(depth), "]}".repeat(depth));
            assert_agrees(wrong.as_bytes());
        }
        // Levels are counted open at a time, not in total.
        let wide = format!(
            "[{}]",
            vec![format!("{}{}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1)); 3].join(",")
        );
        assert!(is_json(wide.as_bytes()));
    }

    #[test]
    fn lone_surrogate_escapes_are_refused_in_keys_and_values() {
        for (doc, ok) in [
            (r#""\ud800""#, false),
            (r#""\uDBFF""#, false),
            (r#""\udc00""#, false),
            (r#""\udfff""#, false),
            (r#"{"\ud800":1}"#, false),
            (r#"{"k\udc00":1}"#, false),
            (r#""\ud800\u0041""#, false),
            (r#""\ud800\ud800""#, false),
            (r#""\ud800\n\udc00""#, false),
            (r#""\ud800x""#, false),
            (r#""\ud800\udc00\udc00""#, false),
            (r#""\ud800\udc00""#, true),
            (r#""\uDBFF\uDFFF""#, true),
            (r#"{"\ud83d\ude00":"\u00e9\ud7ff\ue000"}"#, true),
            (r#""\\ud800""#, true),
            (r#""\\\\ud800""#, true),
        ] {
            assert_agrees(doc.as_bytes());
            assert_eq!(is_json(doc.as_bytes()), ok, "{doc}");
        }
    }

    /// Tokens that JSON is made of, and some that it is not.
    fn token() -> impl Strategy<Value = Vec<u8>> {
        let fixed: Vec<&'static [u8]> = vec![
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b":",
            b"\"",
            b"\\",
            b" ",
            b"\n",
            b"\t",
            b"\r",
            b"\x0c",
            b"null",
            b"true",
            b"false",
            b"nul",
            b"-",
            b"0",
            b"7",
            b"12",
            b".",
            b"e",
            b"E",
            b"+",
            b"\"k\"",
            b"\"\\u00ff\"",
            b"\\u",
            b"\\ud800",
            b"\\uDBFF",
            b"\\udc00",
            b"\\uDFFF",
            b"d83d",
            b"\\n",
            b"\\q",
            b"ab",
            b"\x01",
            b"\x1f",
            b"\x7f",
            b"\xc3\xa9",
            b"\xe2\x82\xac",
            b"\xf0\x9f\x98\x80",
            b"\xc3",
            b"\xed\xa0\x80",
            b"\xff",
            b"0123456789abcdef",
        ];
        prop_oneof![
            4 => proptest::sample::select(fixed).prop_map(<[u8]>::to_vec),
            1 => proptest::collection::vec(any::<u8>(), 0..4),
        ]
    }

    /// A JSON value, for mutating into near-misses.
    fn value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".{0,40}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// String contents made of escapes: surrogates high and low, paired or
    /// not, next to other escapes and text that looks like their halves.
    fn escaped_text() -> impl Strategy<Value = String> {
        let pieces = vec![
            r"\ud83d", r"\ude00", r"\uDBFF", r"\uDFFF", r"\uD800", r"\udc00", r"\u00e9", r"\ud7ff", r"\ue000", r"\\",
            r#"\""#, r"\n", r"\u", "u", "d800", "a", "\u{e9}", "[", "{",
        ];
        proptest::collection::vec(proptest::sample::select(pieces), 0..8).prop_map(|p| p.concat())
    }

    /// An object's key: mostly brackets and escapes that do not nest or
    /// end it, sometimes any escaped text (a lone surrogate among them).
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => proptest::sample::select(vec!["", "a", "[", "{[", r#"\"["#, r"\\", r"\ud83d\ude00"]).prop_map(String::from),
            1 => escaped_text(),
        ]
    }

    /// A document nested around `MAX_DEPTH`: `inner` wrapped `depth` times
    /// in arrays and objects (whose keys hold escapes and brackets), the
    /// innermost possibly empty.
    fn deep_document() -> impl Strategy<Value = String> {
        (
            MAX_DEPTH - 4..MAX_DEPTH + 4,
            proptest::collection::vec((any::<bool>(), key()), MAX_DEPTH + 4),
            prop_oneof![
                Just("[]".to_string()),
                Just("{}".to_string()),
                Just("1".to_string()),
                escaped_text().prop_map(|t| format!("\"{t}\""))
            ],
        )
            .prop_map(|(depth, wraps, inner)| {
                let (mut open, mut close) = (String::new(), String::new());
                for (object, key) in wraps.into_iter().take(depth) {
                    if object {
                        open.push_str(&format!("{{\"{key}\": "));
                        close.insert(0, '}');
                    } else {
                        open.push_str("[0, ");
                        close.insert(0, ']');
                    }
                }
                format!("{open}{inner}{close}")
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn agrees_with_json_limits_on_escaped_strings(key in escaped_text(), value in escaped_text()) {
            assert_agrees(format!("{{\"{key}\":\"{value}\"}}").as_bytes());
            assert_agrees(format!("[\"{value}\"]").as_bytes());
        }

        #[test]
        fn agrees_with_json_limits_around_the_depth_limit(
            doc in deep_document(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let bytes = doc.into_bytes();
            assert_agrees(&bytes);
            assert_agrees(&bytes[..cut.index(bytes.len() + 1)]);
            let mut flipped = bytes;
            let at = flip.index(flipped.len());
            flipped[at] = byte;
            assert_agrees(&flipped);
        }

        #[test]
        fn agrees_with_json_limits_on_token_soup(tokens in proptest::collection::vec(token(), 0..24)) {
            assert_agrees(&tokens.concat());
        }

        #[test]
        fn agrees_with_json_limits_on_valid_documents_and_their_mutations(
            doc in value(),
            pretty in any::<bool>(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let bytes = if pretty { serde_json::to_vec_pretty(&doc) } else { serde_json::to_vec(&doc) }.unwrap();
            prop_assert!(is_json(&bytes), "a serialized value must be accepted");
            assert_agrees(&bytes[..cut.index(bytes.len() + 1)]);
            let mut flipped = bytes.clone();
            if !flipped.is_empty() {
                flipped[flip.index(bytes.len())] = byte;
            }
            assert_agrees(&flipped);
            let mut inserted = bytes;
            inserted.insert(flip.index(inserted.len() + 1), byte);
            assert_agrees(&inserted);
        }
    }
}

#[cfg(test)]
mod review_exhaustive {
    use super::super::json_limits;
    use super::is_json;

    fn check(doc: &[u8]) {
        assert_eq!(
            is_json(doc),
            json_limits::check_document(doc).is_ok(),
            "divergence on {:?}",
            doc
        );
    }

    /// Every document of up to 4 bytes over an alphabet of JSON's pieces.
    #[test]
    #[ignore = "review: long-running exhaustive differential check"]
    fn review_exhaustive_short_documents() {
        let alphabet: &[u8] = b"{}[],:\"\\ \n\r\t\x0c01-+.eEnultrfasb/\x01\x7f\xc3\xa9\xff\xed\xa0d8";
        let n = alphabet.len();
        let mut doc = Vec::new();
        for len in 0..=5u32 {
            for mut i in 0..n.pow(len) {
                doc.clear();
                for _ in 0..len {
                    doc.push(alphabet[i % n]);
                    i /= n;
                }
                check(&doc);
            }
        }
    }

    /// Random token soups, longer than the proptests try, with a cheap RNG.
    #[test]
    #[ignore = "review: long-running random differential check"]
    fn review_random_token_soup() {
        let tokens: &[&[u8]] = &[
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b":",
            b"\"",
            b"\\",
            b" ",
            b"\n",
            b"\r",
            b"\t",
            b"\x0c",
            b"null",
            b"true",
            b"false",
            b"-",
            b"0",
            b"1",
            b"9",
            b".",
            b"e",
            b"E",
            b"+",
            b"\"k\"",
            b"\\u",
            b"\\ud800",
            b"\\udc00",
            b"\\uDBFF",
            b"\\uDFFF",
            b"\\u00",
            b"\\n",
            b"\\/",
            b"\\\"",
            b"\\\\",
            b"\xc3\xa9",
            b"\xc3",
            b"\xe0\xa0\x80",
            b"\xe0\x80",
            b"\xed\x9f\xbf",
            b"\xed\xa0\x80",
            b"\xf0\x90\x80\x80",
            b"\xf4\x90\x80\x80",
            b"\xf4\x8f\xbf\xbf",
            b"\x80",
            b"\x00",
            b"\x1f",
            b"\x7f",
            b"abcdefghijklmnop",
            b"abcdefg",
            b"x",
            b"\"abcdefghijklmnopqrstuvwxyz0123\"",
        ];
        let mut state = 0x9E3779B97F4A7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut doc = Vec::new();
        for _ in 0..30_000_000 {
            doc.clear();
            let len = next() % 40;
            for _ in 0..len {
                doc.extend_from_slice(tokens[(next() % tokens.len() as u64) as usize]);
            }
            check(&doc);
        }
    }
}
