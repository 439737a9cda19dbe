//! Media types: what a request body is, and what a reader accepts.
//!
//! Negotiation (`prefers`): JSON is the default answer; an alternative (an
//! event stream, raw bytes) is sent only when the Accept header names it
//! exactly and ranks it above JSON. Each type's quality is the `q` of the
//! most specific range that matches it (`type/subtype` over `type/*` over
//! `*/*`; other parameters are ignored), and no range means 0. Wildcards
//! count for JSON but never pick an alternative: `*/*` or `text/*` must not
//! open an endless stream. On equal quality the type matched by the more
//! specific range wins, then the one whose range comes first. `q=0` means
//! "not this"; a range with a malformed `q` (not 0 to 1 with at most three
//! decimals) is ignored. Names are case-insensitive; whitespace around
//! `,`, `;` and `=` is allowed. When nothing is acceptable the answer is
//! JSON anyway, as RFC 9110 §12.5.1 allows.

use axum::http::{HeaderMap, header};

use super::error::{ApiError, ApiResult, Echo};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Ndjson,
    Binary,
    /// A `distlog.v1.RecordBatch` (`proto/distlog.proto`).
    Protobuf,
}

fn essence(value: &str) -> String {
    value.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The body's format from its Content-Type (none means JSON).
pub fn body_format(headers: &HeaderMap) -> ApiResult<BodyFormat> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyFormat::Json);
    };
    let raw = value.to_str().unwrap_or("");
    match essence(raw).as_str() {
        "" | "application/json" | "application/x-www-form-urlencoded" => Ok(BodyFormat::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(BodyFormat::Ndjson),
        "application/octet-stream" => Ok(BodyFormat::Binary),
        "application/x-protobuf" | "application/protobuf" => Ok(BodyFormat::Protobuf),
        other if other.ends_with("+json") => Ok(BodyFormat::Json),
        _ => Err(ApiError::UnsupportedMediaType(Echo::of(raw))),
    }
}

const JSON: &str = "application/json";

/// Whether the Accept header ranks `alternative` (`type/subtype`, lower
/// case) above JSON, by the rules in the module doc.
pub fn prefers(headers: &HeaderMap, alternative: &str) -> bool {
    choose(headers, &[alternative]).is_some()
}

/// Which of `alternatives` (each a list of names for one type, lower case)
/// the Accept header ranks highest, if that one ranks above JSON: an
/// answer offered in several forms takes the one the client ranked first,
/// not the first one the server asks about.
pub fn choose<const N: usize>(headers: &HeaderMap, alternatives: &[&str; N]) -> Option<usize> {
    let mut json = Match::NONE;
    // On the stack: this runs for every read and append.
    let mut others = [Match::NONE; N];
    let mut position = 0;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in split_unquoted(value, ',') {
            let Some((media, quality)) = parse_range(range) else {
                continue;
            };
            position += 1;
            json.consider(specificity(media, JSON), quality, position);
            for (other, alternative) in others.iter_mut().zip(alternatives) {
                if alternative.split(',').any(|name| media.eq_ignore_ascii_case(name)) {
                    other.consider(Some(EXACT), quality, position);
                }
            }
        }
    }
    let (best, other) = others
        .iter()
        .enumerate()
        .filter(|(_, other)| other.quality > 0 && other.beats(&json))
        .reduce(|best, next| if next.1.beats(best.1) { next } else { best })?;
    debug_assert!(other.beats(&json));
    Some(best)
}

const EXACT: u8 = 3;

/// How well a type matches so far: the most specific range wins.
#[derive(Clone, Copy, Debug)]
struct Match {
    specificity: u8,
    quality: u16,
    position: usize,
}

impl Match {
    const NONE: Match = Match {
        specificity: 0,
        quality: 0,
        position: usize::MAX,
    };

    fn consider(&mut self, specificity: Option<u8>, quality: u16, position: usize) {
        if let Some(specificity) = specificity
            && specificity > self.specificity
        {
            *self = Match {
                specificity,
                quality,
                position,
            };
        }
    }

    fn beats(&self, other: &Match) -> bool {
        (self.quality, self.specificity, std::cmp::Reverse(self.position))
            > (other.quality, other.specificity, std::cmp::Reverse(other.position))
    }
}

/// How specifically `range` matches `media`: exactly (3), `type/*` (2),
/// `*/*` (1), or not at all.
fn specificity(range: &str, media: &str) -> Option<u8> {
    if range.eq_ignore_ascii_case(media) {
        return Some(EXACT);
    }
    let (range_type, range_subtype) = range.split_once('/')?;
    let (media_type, _) = media.split_once('/')?;
    match (range_type, range_subtype) {
        ("*", "*") => Some(1),
        (t, "*") if t.eq_ignore_ascii_case(media_type) => Some(2),
        _ => None,
    }
}

/// One Accept range: its media type and its quality in thousandths, or
/// `None` to ignore it (empty, or a malformed `q`).
fn parse_range(range: &str) -> Option<(&str, u16)> {
    let mut parts = split_unquoted(range, ';');
    let media = parts.next()?.trim();
    if media.is_empty() {
        return None;
    }
    let mut quality = 1000;
    for parameter in parts {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("q") {
            quality = parse_quality(value.trim())?;
        }
    }
    Some((media, quality))
}

/// RFC 9110 §12.4.2: `0[.ddd]` or `1[.000]`, in thousandths.
fn parse_quality(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Splits on `separator` outside double-quoted strings (parameter values
/// may hold commas and semicolons).
fn split_unquoted(text: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, c) in text.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                c if c == separator && !quoted => {
                    rest = Some(&text[i + c.len_utf8()..]);
                    return Some(&text[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    const SSE: &str = "text/event-stream";
    const RAW: &str = "application/octet-stream";

    fn picks_sse(accept: &str) -> bool {
        prefers(&with(header::ACCEPT, accept), SSE)
    }

    #[test]
    fn of_several_alternatives_the_one_ranked_first_is_chosen() {
        let accept = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, value.parse().unwrap());
            headers
        };
        let forms = [
            "application/octet-stream",
            "application/x-protobuf,application/protobuf",
        ];
        let pick = |value: &str| choose(&accept(value), &forms);
        assert_eq!(pick("application/x-protobuf, application/octet-stream;q=0.5"), Some(1));
        assert_eq!(pick("application/octet-stream, application/protobuf;q=0.5"), Some(0));
        assert_eq!(pick("application/protobuf"), Some(1), "either name");
        assert_eq!(
            pick("application/json, application/x-protobuf;q=0.9"),
            None,
            "JSON ranked first"
        );
        assert_eq!(pick("*/*"), None);
        let stream = ["text/event-stream", "application/x-protobuf,application/protobuf"];
        let headers = accept("application/x-protobuf, text/event-stream;q=0.1");
        assert_eq!(
            choose(&headers, &stream),
            Some(1),
            "no endless stream for a protobuf reader"
        );
    }

    #[test]
    fn content_types_pick_the_format() {
        assert_eq!(body_format(&HeaderMap::new()).unwrap(), BodyFormat::Json);
        let json = with(header::CONTENT_TYPE, "application/json; charset=utf-8");
        assert_eq!(body_format(&json).unwrap(), BodyFormat::Json);
        let ndjson = with(header::CONTENT_TYPE, "application/x-ndjson");
        assert_eq!(body_format(&ndjson).unwrap(), BodyFormat::Ndjson);
        let binary = with(header::CONTENT_TYPE, "Application/Octet-Stream");
        assert_eq!(body_format(&binary).unwrap(), BodyFormat::Binary);
        assert!(body_format(&with(header::CONTENT_TYPE, "text/plain")).is_err());
    }

    #[test]
    fn no_accept_header_means_json() {
        assert!(!prefers(&HeaderMap::new(), SSE));
        assert!(!picks_sse(""));
        assert!(!picks_sse(" , ,"));
    }

    #[test]
    fn naming_the_alternative_picks_it() {
        assert!(picks_sse("text/event-stream"));
        assert!(picks_sse("text/html, text/event-stream;q=0.9"));
        assert!(!picks_sse("text/html"));
    }

    #[test]
    fn q_zero_excludes() {
        assert!(!picks_sse("text/event-stream;q=0"));
        assert!(!picks_sse("text/event-stream;q=0.000"));
        assert!(picks_sse("text/event-stream;q=0.001"));
        assert!(!picks_sse("application/json;q=0, text/event-stream;q=0"));
        assert!(picks_sse("application/json;q=0, text/event-stream"));
    }

    #[test]
    fn the_highest_q_wins() {
        assert!(!picks_sse("application/json, text/event-stream;q=0.1"));
        assert!(picks_sse("application/json;q=0.1, text/event-stream"));
        assert!(picks_sse("text/event-stream;q=0.5, application/json;q=0.4"));
        assert!(!picks_sse("text/event-stream;q=0.5, */*"));
        assert!(picks_sse("text/event-stream;q=0.5, */*;q=0.4"));
    }

    #[test]
    fn ties_go_to_the_more_specific_range_then_the_first() {
        assert!(picks_sse("*/*, text/event-stream"));
        assert!(picks_sse("text/event-stream, application/*"));
        assert!(picks_sse("text/event-stream, application/json"));
        assert!(!picks_sse("application/json, text/event-stream"));
        assert!(!picks_sse("application/json;q=0.5, text/event-stream;q=0.5"));
    }

    #[test]
    fn the_most_specific_range_sets_a_types_quality() {
        // */* would say 1 for JSON, but its own range says 0.1.
        assert!(picks_sse("*/*, application/json;q=0.1, text/event-stream;q=0.5"));
        assert!(!picks_sse("application/*;q=0.9, text/event-stream;q=0.5, */*;q=0.1"));
    }

    #[test]
    fn wildcards_never_pick_an_alternative() {
        assert!(!picks_sse("*/*"));
        assert!(!picks_sse("text/*"));
        assert!(!picks_sse("text/*, application/json;q=0.1"));
        assert!(!prefers(&with(header::ACCEPT, "application/*"), RAW));
    }

    #[test]
    fn parameters_whitespace_and_case() {
        assert!(picks_sse("TEXT/Event-Stream ; Q = 1"));
        assert!(picks_sse("text/event-stream;charset=utf-8"));
        assert!(!picks_sse("text/event-stream ;level=\"a,b;q=0\";q=0"));
        assert!(picks_sse("text/html;x=\"a,text/event-stream\", text/event-stream"));
        assert!(!picks_sse("text/html;x=\"a,text/event-stream\""));
        let mut two_lines = with(header::ACCEPT, "application/json;q=0.2");
        two_lines.append(header::ACCEPT, HeaderValue::from_static("text/event-stream;q=0.3"));
        assert!(prefers(&two_lines, SSE));
    }

    #[test]
    fn malformed_q_values_ignore_their_range() {
        for bad in [
            "abc", "2", "1.5", "-1", "0.1234", "", ".5", "1.001", "\"1\"", "inf", "NaN", "0x1",
        ] {
            assert!(!picks_sse(&format!("text/event-stream;q={bad}")), "q={bad}");
            assert_eq!(parse_quality(bad), None, "q={bad}");
        }
        assert!(picks_sse("application/json;q=bad, text/event-stream;q=0.1"));
        for (good, thousandths) in [
            ("0", 0),
            ("0.", 0),
            ("0.5", 500),
            ("0.25", 250),
            ("0.125", 125),
            ("1", 1000),
            ("1.000", 1000),
        ] {
            assert_eq!(parse_quality(good), Some(thousandths), "q={good}");
        }
    }

    #[test]
    fn raw_bytes_negotiate_the_same_way() {
        let raw = |accept| prefers(&with(header::ACCEPT, accept), RAW);
        assert!(raw("application/octet-stream"));
        assert!(!raw("application/octet-stream;q=0"));
        assert!(!raw("application/json, application/octet-stream;q=0.9"));
        assert!(raw("application/json;q=0.9, application/octet-stream"));
        assert!(!raw("*/*"));
    }
}
