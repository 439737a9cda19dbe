//! Query-string parsing with errors that name the parameter.
//!
//! Two kinds of whole numbers: budgets (`limit`, `wait_ms`, `max_bytes`,
//! ...), which the handlers cap, so a value beyond `u64` saturates to the
//! cap like any other large one; and offsets, where a value beyond `u64`
//! names no record at all and is refused.

use std::collections::HashMap;
use std::num::IntErrorKind;

use super::error::{ApiError, ApiResult, Echo};

pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> ApiResult<Query> {
        serde_urlencoded::from_str(raw.unwrap_or(""))
            .map(Query)
            .map_err(|e| ApiError::BadQuery {
                param: "query",
                detail: e.to_string(),
            })
    }

    /// Whether the query names `param`, whatever its value.
    pub fn has(&self, param: &str) -> bool {
        self.0.contains_key(param)
    }

    /// A whole-number budget, if present; beyond `u64::MAX` it saturates
    /// (every caller caps it far below).
    pub fn number(&self, param: &'static str) -> ApiResult<Option<u64>> {
        self.whole(param, |text| format!("{:?} is not a whole number", Echo::of(text)))
            .map(|n| n.map(|n| n.unwrap_or(u64::MAX)))
    }

    /// An offset, if present: a whole number from 0 to `u64::MAX`.
    pub fn offset(&self, param: &'static str) -> ApiResult<Option<u64>> {
        let outside = |text: &str| {
            format!(
                "{:?} is not an offset: a whole number from 0 to {}",
                Echo::of(text),
                u64::MAX
            )
        };
        match self.whole(param, outside)? {
            None => Ok(None),
            Some(Some(offset)) => Ok(Some(offset)),
            Some(None) => Err(ApiError::BadQuery {
                param,
                detail: outside(&self.0[param]),
            }),
        }
    }

    /// `Some(None)` for a whole number too large for `u64`.
    fn whole(&self, param: &'static str, describe: impl Fn(&str) -> String) -> ApiResult<Option<Option<u64>>> {
        let Some(text) = self.0.get(param) else {
            return Ok(None);
        };
        match text.trim().parse::<u64>() {
            Ok(n) => Ok(Some(Some(n))),
            Err(e) if *e.kind() == IntErrorKind::PosOverflow => Ok(Some(None)),
            Err(_) => Err(ApiError::BadQuery {
                param,
                detail: describe(text),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_and_bad_ones_name_the_parameter() {
        let query = Query::parse(Some("from=5&limit=abc&wait_ms=%31%30")).unwrap();
        assert_eq!(query.number("from").unwrap(), Some(5));
        assert_eq!(query.number("wait_ms").unwrap(), Some(10));
        assert_eq!(query.number("missing").unwrap(), None);
        match query.number("limit") {
            Err(ApiError::BadQuery { param: "limit", .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn budgets_beyond_u64_saturate_and_offsets_beyond_it_are_refused() {
        let query = Query::parse(Some("limit=99999999999999999999&from=18446744073709551616&to=-1")).unwrap();
        assert_eq!(query.number("limit").unwrap(), Some(u64::MAX));
        match query.offset("from") {
            Err(ApiError::BadQuery { param: "from", detail }) => {
                assert!(detail.contains("18446744073709551615"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        assert!(query.number("to").is_err(), "a negative number is not saturated");
        let max = Query::parse(Some("from=18446744073709551615")).unwrap();
        assert_eq!(max.offset("from").unwrap(), Some(u64::MAX));
    }
}
