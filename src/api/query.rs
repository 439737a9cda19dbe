//! Query-string parsing with errors that name the parameter.

use std::collections::HashMap;

use super::error::{ApiError, ApiResult};

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

    /// A whole number parameter, if present.
    pub fn number(&self, param: &'static str) -> ApiResult<Option<u64>> {
        match self.0.get(param) {
            None => Ok(None),
            Some(text) => text.trim().parse::<u64>().map(Some).map_err(|_| ApiError::BadQuery {
                param,
                detail: format!("{text:?} is not a whole number"),
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
}
