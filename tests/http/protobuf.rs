//! The protobuf encoding (`proto/distlog.proto`): `POST /` with a
//! `RecordBatch`, reads with `Accept: application/x-protobuf`.

use crate::common;

use bytes::Bytes;
use common::{client, get_json, start_in};
use distlog_client::proto::{AppendResult, Format, Message, RangeResult, Record, RecordBatch};
use serde_json::{Value, json};

const PROTOBUF: &str = "application/x-protobuf";

fn batch(records: &[(Format, &[u8])]) -> Vec<u8> {
    RecordBatch {
        records: records
            .iter()
            .map(|(format, value)| Record {
                value: Bytes::copy_from_slice(value),
                format: (*format).into(),
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec()
}

async fn post(url: &str, body: Vec<u8>, accept: Option<&str>, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client()
        .post(format!("{url}/"))
        .header("content-type", PROTOBUF)
        .body(body);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn get_protobuf(url: &str) -> (u16, String, Bytes) {
    let response = client().get(url).header("accept", PROTOBUF).send().await.unwrap();
    let status = response.status().as_u16();
    let media = response.headers()["content-type"].to_str().unwrap().to_string();
    (status, media, response.bytes().await.unwrap())
}

#[tokio::test]
async fn a_protobuf_batch_is_appended_whole_and_reads_back_in_protobuf_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let body = batch(&[
        (Format::Json, br#"{"event":"signup"}"#),
        (Format::Binary, &[0, 159, 146, 150]),
    ]);
    let response = post(&node.url, body.clone(), Some(PROTOBUF), &[]).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["content-type"], PROTOBUF);
    assert_eq!(response.headers()["location"], "/0");
    let result = AppendResult::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        (result.first_offset, result.last_offset, result.duplicate),
        (0, 1, false)
    );

    // Without Accept, the usual JSON answer.
    let response = post(&node.url, body, None, &[]).await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"first_offset": 2, "last_offset": 3})
    );

    let (status, media, one) = get_protobuf(&format!("{}/0", node.url)).await;
    assert_eq!((status, media.as_str()), (200, PROTOBUF));
    let one = Record::decode(one).unwrap();
    assert_eq!((one.offset, one.format()), (0, Format::Json));
    assert_eq!(one.value, Bytes::from_static(br#"{"event":"signup"}"#));
    assert!(one.timestamp > 1_600_000_000_000);

    let (status, _, range) = get_protobuf(&format!("{}/?from=1&limit=2", node.url)).await;
    assert_eq!(status, 200);
    let range = RangeResult::decode(range).unwrap();
    assert_eq!(range.next_offset, 3);
    let offsets: Vec<_> = range.records.iter().map(|r| (r.offset, r.format())).collect();
    assert_eq!(offsets, [(1, Format::Binary), (2, Format::Json)]);
    assert_eq!(range.records[0].value, Bytes::from_static(&[0, 159, 146, 150]));
    let (_, tail, _) = get_protobuf(&format!("{}/?tail=1", node.url)).await;
    assert_eq!(tail, PROTOBUF);

    // JSON readers see the same records.
    assert_eq!(get_json(&format!("{}/0", node.url)).await.1["value"]["event"], "signup");
    assert_eq!(get_json(&format!("{}/1", node.url)).await.1["value_base64"], "AJ+Slg==");
}

#[tokio::test]
async fn bad_protobuf_batches_are_refused_whole_with_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let refused = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        (status, body["code"].as_str().unwrap_or_default().to_string(), body)
    };
    let (status, code, _) = refused(post(&node.url, vec![0xff, 0xff, 0xff], Some(PROTOBUF), &[]).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_protobuf"));
    let bad_json = batch(&[(Format::Json, b"{}"), (Format::Json, b"{\"a\":")]);
    let (status, code, body) = refused(post(&node.url, bad_json, None, &[]).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_json"), "{body}");
    let (status, code, _) = refused(post(&node.url, batch(&[]), None, &[]).await).await;
    assert_eq!((status, code.as_str()), (400, "empty_body"));
    let big = vec![b'x'; 2 << 20];
    let (status, code, _) = refused(post(&node.url, batch(&[(Format::Binary, &big)]), None, &[]).await).await;
    assert_eq!((status, code.as_str()), (413, "too_large"));
    assert_eq!(common::status(&node.url).await["next_offset"], 0, "nothing appended");
}

#[tokio::test]
async fn a_producers_protobuf_retry_is_answered_with_its_original_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let producer = [("Producer-Id", "proto-1"), ("Producer-Seq", "0")];
    let body = batch(&[(Format::Json, b"1"), (Format::Json, b"2")]);
    let first = post(&node.url, body.clone(), Some(PROTOBUF), &producer).await;
    assert_eq!(first.status(), 201);
    let retry = post(&node.url, body, Some(PROTOBUF), &producer).await;
    assert_eq!(retry.status(), 200);
    let result = AppendResult::decode(retry.bytes().await.unwrap()).unwrap();
    assert_eq!(
        (result.first_offset, result.last_offset, result.duplicate),
        (0, 1, true)
    );
    assert_eq!(common::status(&node.url).await["next_offset"], 2);
}
