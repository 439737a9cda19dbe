//! The three facts distlog reads from an X.509 certificate itself: when it
//! expires (to refuse an expired server certificate at startup), its
//! subject common name (a client's principal), and whether it names any
//! host (a peer's certificate that does is held to its member's host; the
//! name check itself is rustls-webpki's, see `tls`). The DER is parsed by
//! x509-parser; this module only decides which common name is the
//! principal and how its string type turns into text.
//!
//! The principal is the first common name in the subject, in RDN order and,
//! inside a multi-valued RDN, in attribute order. A name whose string type
//! does not say how its bytes map to characters, or whose bytes break its
//! type's rules, is no principal at all rather than a guess: a misread name
//! could match someone else's ACL line.

use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::{Any, Tag};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

fn parse(cert_der: &[u8]) -> Option<X509Certificate<'_>> {
    X509Certificate::from_der(cert_der).ok().map(|(_, cert)| cert)
}

/// Seconds since the Unix epoch at which the certificate stops being valid.
pub fn not_after(cert_der: &[u8]) -> Option<i64> {
    Some(parse(cert_der)?.validity().not_after.timestamp())
}

/// The subject's common name, if it has one that decodes as text.
pub fn subject_common_name(cert_der: &[u8]) -> Option<String> {
    let cert = parse(cert_der)?;
    let first = cert.subject().iter_common_name().next()?;
    directory_string(first.attr_value())
}

/// Whether the certificate names a host: a DNS name or an IP address among
/// its subject alternative names. A certificate x509-parser cannot read,
/// or whose names it cannot read, is taken as naming hosts: the caller then
/// holds it to the host it claims, which such a certificate fails.
pub fn names_hosts(cert_der: &[u8]) -> bool {
    let Some(cert) = parse(cert_der) else { return true };
    match cert.subject_alternative_name() {
        Ok(Some(names)) => names
            .value
            .general_names
            .iter()
            .any(|name| matches!(name, GeneralName::DNSName(_) | GeneralName::IPAddress(_))),
        Ok(None) => false,
        Err(_) => true,
    }
}

/// The text of a DirectoryString (RFC 5280) or of the other string types
/// seen in names, each decoded by its own rules.
fn directory_string(value: &Any) -> Option<String> {
    let text = match value.tag() {
        Tag::Utf8String => value.as_str().ok()?.to_string(),
        Tag::PrintableString => value.as_printablestring().ok()?.string(),
        Tag::Ia5String => value.as_ia5string().ok()?.string(),
        Tag::VisibleString => value.as_visiblestring().ok()?.string(),
        Tag::NumericString => value.as_numericstring().ok()?.string(),
        // T.61 has no agreed mapping beyond ASCII; the parser takes only
        // visible ASCII, where every reading agrees.
        Tag::TeletexString => value.as_teletexstring().ok()?.string(),
        // UTF-16 big-endian: an odd length is malformed, which the parser
        // would pad rather than refuse.
        Tag::BmpString if value.as_bytes().len().is_multiple_of(2) => value.as_bmpstring().ok()?.string(),
        Tag::UniversalString => value.as_universalstring().ok()?.string(),
        _ => return None,
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;
    const CONTEXT_0: u8 = 0xa0;
    const COMMON_NAME_OID: &[u8] = &[0x55, 0x04, 0x03];
    /// 2031-05-17T00:00:00Z and 2051-01-01T00:00:00Z.
    const MAY_17_2031: i64 = 1_936_742_400;
    const JAN_1_2051: i64 = 2_556_144_000;

    #[test]
    fn reads_validity_and_common_name_of_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_common_name(cert.der()).as_deref(), Some("alice"));
        assert_eq!(not_after(cert.der()), Some(MAY_17_2031));
    }

    /// One DER element.
    fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match contents.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n <= 0xff => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(contents);
        out
    }

    const ORGANIZATION_OID: &[u8] = &[0x55, 0x04, 0x0a];
    const UTF8_STRING: u8 = 0x0c;

    fn attribute(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        der(SEQUENCE, &[der(OID, oid), der(tag, value)].concat())
    }

    /// A certificate (signature not valid: nothing here checks it) whose
    /// subject is the DER Name `subject`.
    fn certificate_with_subject(subject: &[u8]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let ecdsa_with_sha256 = der(SEQUENCE, &der(OID, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]));
        let issuer = der(
            SEQUENCE,
            &der(SET, &attribute(COMMON_NAME_OID, UTF8_STRING, b"test ca")),
        );
        let validity = der(
            SEQUENCE,
            &[
                der(UTC_TIME, b"250101000000Z"),
                der(GENERALIZED_TIME, b"20510101000000Z"),
            ]
            .concat(),
        );
        let tbs = [
            der(CONTEXT_0, &der(0x02, &[2])),
            der(0x02, &[1]),
            ecdsa_with_sha256.clone(),
            issuer,
            validity,
            subject.to_vec(),
            key.public_key_der(),
        ]
        .concat();
        let signature = der(0x03, &[0, 1, 2, 3]);
        der(SEQUENCE, &[der(SEQUENCE, &tbs), ecdsa_with_sha256, signature].concat())
    }

    #[test]
    fn a_common_name_inside_a_multi_valued_rdn_is_found() {
        // One RDN holding two attributes, O=Acme + CN=alice (DER sorts the
        // shorter O first), then a country RDN.
        let rdn = der(
            SET,
            &[
                attribute(ORGANIZATION_OID, UTF8_STRING, b"Acme"),
                attribute(COMMON_NAME_OID, UTF8_STRING, b"alice"),
            ]
            .concat(),
        );
        let country = der(SET, &attribute(&[0x55, 0x04, 0x06], 0x13, b"NL"));
        let cert = certificate_with_subject(&der(SEQUENCE, &[rdn, country].concat()));
        assert_eq!(subject_common_name(&cert).as_deref(), Some("alice"));
        assert_eq!(not_after(&cert), Some(JAN_1_2051));
    }

    fn common_name_of(value: rcgen::DnValue) -> Option<String> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, value);
        let key = rcgen::KeyPair::generate().unwrap();
        subject_common_name(params.self_signed(&key).unwrap().der())
    }

    #[test]
    fn common_names_are_decoded_by_their_string_type() {
        let bmp = |s: &str| rcgen::DnValue::BmpString(rcgen::BmpString::try_from(s).unwrap());
        assert_eq!(
            common_name_of(bmp("alice")).as_deref(),
            Some("alice"),
            "UTF-16, not bytes"
        );
        assert_eq!(common_name_of(bmp("Zoë")).as_deref(), Some("Zoë"));
        let universal = rcgen::DnValue::UniversalString(rcgen::UniversalString::try_from("Zoë").unwrap());
        assert_eq!(common_name_of(universal).as_deref(), Some("Zoë"), "UTF-32");
        let printable = rcgen::DnValue::PrintableString(rcgen::PrintableString::try_from("bob").unwrap());
        assert_eq!(common_name_of(printable).as_deref(), Some("bob"));
        let utf8 = rcgen::DnValue::Utf8String("Zoë".into());
        assert_eq!(common_name_of(utf8).as_deref(), Some("Zoë"));
    }

    #[test]
    fn common_names_that_would_need_a_guess_are_no_principal() {
        let cases: [(u8, &[u8]); 3] = [
            (0x1e, b"\0a\0"),  // BMPString of odd length
            (0x14, b"Zo\xeb"), // TeletexString beyond ASCII
            (0x04, b"alice"),  // OCTET STRING: not text at all
        ];
        for (tag, bytes) in cases {
            let subject = der(SEQUENCE, &der(SET, &attribute(COMMON_NAME_OID, tag, bytes)));
            assert_eq!(
                subject_common_name(&certificate_with_subject(&subject)),
                None,
                "tag {tag:#x}"
            );
        }
    }

    #[test]
    fn garbage_is_refused_not_trusted() {
        assert_eq!(not_after(&[0x30, 0x82, 0xff]), None);
        assert_eq!(subject_common_name(&[]), None);
        assert_eq!(subject_common_name(&[0x30, 0x85, 0, 0, 0, 0, 0]), None);
        assert!(names_hosts(&[]), "taken as naming hosts, so held to one");
    }
}
