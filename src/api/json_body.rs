//! JSON answers: every JSON body ends with a newline, so that `curl` leaves
//! the shell prompt on a line of its own and line-based tools see one answer
//! a line. `Json` stands in for `axum::Json` (which ends at the closing
//! brace); bodies rendered by hand (records, ranges, created offsets) go
//! through `with_newline` or `json_bytes`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A value answered as JSON and a newline.
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => json_bytes(StatusCode::OK, body),
            Err(e) => {
                tracing::error!(error = %e, "an answer could not be serialized");
                let body = br#"{"error":"the answer could not be rendered","code":"internal"}"#.to_vec();
                json_bytes(StatusCode::INTERNAL_SERVER_ERROR, body)
            }
        }
    }
}

/// `body`, JSON already, as an answer with `status`; the newline is added.
pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, with_newline(body)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, APPLICATION_JSON);
    response
}

pub fn with_newline(mut body: Vec<u8>) -> Vec<u8> {
    body.push(b'\n');
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn json_answers_end_with_a_newline() {
        let response = Json(serde_json::json!({"a": 1})).into_response();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"{\"a\":1}\n");
    }
}
