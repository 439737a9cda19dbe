//! Bearer tokens from `--token-file`: lines of `<principal> <token>`
//! (blank lines and `#` comments ignored). Only SHA-256 digests of the
//! tokens are kept, and a presented token's digest is compared with every
//! known one in constant time.

use std::path::Path;

use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;

use super::{AuthConfigError, LineError, load_file, word_pairs};

pub const MIN_TOKEN_LEN: usize = 32;

#[derive(Clone)]
pub struct Tokens {
    entries: Vec<([u8; 32], String)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} principals)", self.entries.len())
    }
}

fn hash(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Tokens, AuthConfigError> {
        load_file(path, Tokens::parse)
    }

    pub fn parse(text: &str) -> Result<Tokens, LineError> {
        let mut entries = Vec::new();
        for (line, principal, token) in word_pairs(text, "<principal> <token>")? {
            if token.len() < MIN_TOKEN_LEN {
                return Err((
                    line,
                    format!("the token of {principal} is shorter than {MIN_TOKEN_LEN} characters"),
                ));
            }
            let digest = hash(token);
            if entries.iter().any(|(known, _)| *known == digest) {
                return Err((line, "this token is already given to a principal".into()));
            }
            entries.push((digest, principal.to_string()));
        }
        Ok(Tokens { entries })
    }

    /// The principal a token belongs to. Every entry is compared, so the
    /// time taken does not depend on which one matches.
    pub fn principal(&self, token: &str) -> Option<&str> {
        let presented = hash(token);
        let mut found = None;
        for (known, principal) in &self.entries {
            if bool::from(known.ct_eq(&presented)) {
                found = Some(principal.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "alice-token-0123456789abcdef0123456789";

    #[test]
    fn tokens_map_to_principals() {
        let tokens = Tokens::parse(&format!("# who\n\nalice {ALICE}\nbob {}\n", "b".repeat(40))).unwrap();
        assert_eq!(tokens.principal(ALICE), Some("alice"));
        assert_eq!(tokens.principal(&"b".repeat(40)), Some("bob"));
        assert_eq!(tokens.principal("nope"), None);
        assert!(
            !format!("{tokens:?}").contains(ALICE),
            "tokens never show in debug output"
        );
    }

    #[test]
    fn short_duplicate_and_malformed_lines_are_refused_with_their_line() {
        assert_eq!(Tokens::parse("alice short").unwrap_err().0, 1);
        let duplicate = format!("alice {ALICE}\nbob {ALICE}\n");
        assert_eq!(Tokens::parse(&duplicate).unwrap_err().0, 2);
        assert_eq!(Tokens::parse("\nalice\n").unwrap_err().0, 2);
    }
}
