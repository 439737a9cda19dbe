//! The two facts distlog reads from an X.509 certificate itself: when it
//! expires (to refuse an expired server certificate at startup) and its
//! subject common name (a client's principal). A minimal DER walk over
//! `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version?,
//! serial, signature, issuer, validity SEQUENCE { notBefore, notAfter },
//! subject, ... } ... }`; every length is checked against its input.

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const CONTEXT_0: u8 = 0xa0;
const COMMON_NAME_OID: &[u8] = &[0x55, 0x04, 0x03];

/// One DER element: (tag, contents, what follows it).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = element(input)?;
    (found == tag).then_some((contents, rest))
}

/// The tbsCertificate fields from `validity` on.
fn from_validity(cert_der: &[u8]) -> Option<&[u8]> {
    let (cert, _) = expect(cert_der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut fields = tbs;
    if fields.first() == Some(&CONTEXT_0) {
        fields = element(fields)?.2;
    }
    let fields = element(fields)?.2; // serial
    let fields = element(fields)?.2; // signature algorithm
    let fields = element(fields)?.2; // issuer
    Some(fields)
}

/// Seconds since the Unix epoch at which the certificate stops being valid.
pub fn not_after(cert_der: &[u8]) -> Option<i64> {
    let (validity, _) = expect(from_validity(cert_der)?, SEQUENCE)?;
    let (_, _, rest) = element(validity)?;
    let (tag, time, _) = element(rest)?;
    parse_time(tag, time)
}

/// The subject's common name, if it has one.
pub fn subject_common_name(cert_der: &[u8]) -> Option<String> {
    let after_validity = element(from_validity(cert_der)?)?.2;
    let (mut names, _) = expect(after_validity, SEQUENCE)?;
    while !names.is_empty() {
        let (set, rest) = expect(names, SET)?;
        names = rest;
        let (attribute, _) = expect(set, SEQUENCE)?;
        let (oid, value) = expect(attribute, OID)?;
        if oid == COMMON_NAME_OID {
            let (_, text, _) = element(value)?;
            return String::from_utf8(text.to_vec()).ok();
        }
    }
    None
}

fn digits(text: &[u8]) -> Option<i64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
}

/// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ`.
fn parse_time(tag: u8, text: &[u8]) -> Option<i64> {
    let (year, rest) = match tag {
        UTC_TIME if text.len() == 13 => {
            let yy = digits(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        GENERALIZED_TIME if text.len() == 15 => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(
            parse_time(UTC_TIME, b"491231235959Z"),
            Some(days_from_civil(2049, 12, 31) * 86_400 + 86_399)
        );
        assert_eq!(
            parse_time(GENERALIZED_TIME, b"20260101000000Z"),
            Some(days_from_civil(2026, 1, 1) * 86_400)
        );
        assert_eq!(parse_time(UTC_TIME, b"2601010000Z"), None);
    }

    #[test]
    fn reads_validity_and_common_name_of_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_common_name(cert.der()).as_deref(), Some("alice"));
        assert_eq!(not_after(cert.der()), Some(days_from_civil(2031, 5, 17) * 86_400));
    }

    #[test]
    fn garbage_is_refused_not_trusted() {
        assert_eq!(not_after(&[0x30, 0x82, 0xff]), None);
        assert_eq!(subject_common_name(&[]), None);
        assert_eq!(element(&[0x30, 0x85, 0, 0, 0, 0, 0]), None);
    }
}
