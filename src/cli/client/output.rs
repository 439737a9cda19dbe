//! How `consume` and `tail` print a record: `json` (one NDJSON line,
//! `{"offset","timestamp","value"}` or `value_base64` for bytes, as the
//! server answers), `text` (offset, timestamp and value separated by tabs)
//! or `value` (the value alone: JSON text, or a binary record's bytes).

use std::io::Write;

use base64::Engine;
use clap::ValueEnum;
use distlog_client::{Payload, Record};

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Format {
    #[default]
    Json,
    Text,
    Value,
}

pub fn write_record(out: &mut impl Write, record: &Record, format: Format) -> std::io::Result<()> {
    match format {
        Format::Json => {
            let mut line = serde_json::json!({ "offset": record.offset, "timestamp": record.timestamp });
            match &record.payload {
                Payload::Json(value) => line["value"] = value.clone(),
                Payload::Bytes(bytes) => {
                    line["value_base64"] = base64::engine::general_purpose::STANDARD.encode(bytes).into();
                }
            }
            writeln!(out, "{line}")
        }
        Format::Text => {
            write!(out, "{}\t{}\t", record.offset, record.timestamp)?;
            out.write_all(&record.bytes())?;
            writeln!(out)
        }
        Format::Value => {
            out.write_all(&record.bytes())?;
            writeln!(out)
        }
    }
}
