//! A named log's name: 1-100 characters of `[a-z0-9][a-z0-9._-]*`. It is a
//! directory name on disk and a label value in metrics, so nothing in it
//! needs quoting or escaping anywhere; it never starts with a dot, so a
//! catalogue's own leftovers (`.creating.*`, `.deleting.*`) are never
//! taken for a log.

use std::fmt;

/// The longest name.
pub const MAX_NAME_LEN: usize = 100;

/// How the default log is named where a name is needed (metrics labels,
/// ACL scopes, `/logs/default/...`). No named log can take it.
pub const DEFAULT_LOG: &str = "default";

/// A checked name (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogName(String);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct InvalidName {
    pub reason: &'static str,
}

impl LogName {
    pub fn parse(name: &str) -> Result<LogName, InvalidName> {
        check(name)?;
        if name == DEFAULT_LOG {
            return Err(InvalidName {
                reason: "`default` names the default log, served at / and configured by the node's flags",
            });
        }
        Ok(LogName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `name` has a name's shape (`default` included).
pub fn check(name: &str) -> Result<(), InvalidName> {
    let invalid = |reason| Err(InvalidName { reason });
    let Some(first) = name.bytes().next() else {
        return invalid("a log name has 1 to 100 characters");
    };
    if name.len() > MAX_NAME_LEN {
        return invalid("a log name has 1 to 100 characters");
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return invalid("a log name starts with a lowercase letter or a digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return invalid("a log name holds only lowercase letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// Lets a map keyed by names be searched with a `&str`.
impl std::borrow::Borrow<str> for LogName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LogName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_one_shape() {
        for good in ["orders", "a", "0", "audit-2026.01_x", &"x".repeat(100)] {
            assert_eq!(LogName::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            &"x".repeat(101),
            "Orders",
            ".hidden",
            "-x",
            "_x",
            "a/b",
            "a b",
            "ä",
            "a%2Fb",
            "..",
            "default",
        ] {
            assert!(LogName::parse(bad).is_err(), "{bad:?} is refused");
        }
        assert!(check("default").is_ok(), "default has a name's shape");
    }
}
