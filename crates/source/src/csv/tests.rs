//! Property tests of the byte-range planner: whatever the records (quoted
//! fields holding delimiters, quotes and newlines), the rows per range
//! and the reads' block size (61 bytes in unit tests), the ranges cover
//! the file's data from the end of the header to its last byte, and
//! reading each range yields every record once, in order.

use std::sync::Arc;

use arrow::array::{Array, StringArray};
use futures_util::StreamExt;
use proptest::prelude::*;

use super::parse::Dialect;
use super::types::ColType;
use super::{CsvSource, CsvSpec, OnBadLine};
use crate::Source;

fn quoted(field: &str) -> String {
    format!("\"{}\"", field.replace('"', "\"\""))
}

fn spec(path: &std::path::Path, header: bool) -> CsvSpec {
    CsvSpec {
        pattern: path.display().to_string(),
        encoding: encoding_rs::UTF_8,
        replace_invalid: false,
        header,
        dialect: Dialect {
            delimiter: b',',
            quote: b'"',
            escape: b'"',
            comment: None,
        },
        null: "\\N".into(),
        // (a file without a header has columns column_1, column_2, ...)
        columns: match header {
            true => vec![("a".into(), ColType::Text), ("b".into(), ColType::Text)],
            false => vec![
                ("column_1".into(), ColType::Text),
                ("column_2".into(), ColType::Text),
            ],
        },
        on_bad_line: OnBadLine::Fail,
        batch_rows: 7,
        rejects: std::path::PathBuf::new(),
        windows: None,
    }
}

/// Every chunk's records, chunk by chunk in plan order.
fn read_all(source: &CsvSource, chunks: &[etl_base::plan::Chunk]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for chunk in chunks {
        etl_pg::block_on(async {
            let mut stream = source.open(chunk).await.unwrap();
            while let Some(batch) = stream.next().await {
                let batch = batch.unwrap();
                let col = |i: usize| -> Arc<dyn Array> { batch.column(i).clone() };
                let (a, b) = (col(0), col(1));
                let a = a.as_any().downcast_ref::<StringArray>().unwrap();
                let b = b.as_any().downcast_ref::<StringArray>().unwrap();
                for r in 0..batch.num_rows() {
                    out.push(vec![a.value(r).to_string(), b.value(r).to_string()]);
                }
            }
        });
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn byte_ranges_hold_every_record_once(
        records in proptest::collection::vec(
            proptest::collection::vec("[a-z0-9 ]{0,9}|[a-c,\"\n\r]{0,8}", 2), 1..50),
        range_rows in 1u64..12,
        header in any::<bool>(),
        last_newline in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.csv");
        let mut text = String::new();
        if header {
            text.push_str("a,b\n");
        }
        let lines: Vec<String> = records
            .iter()
            .map(|r| r.iter().map(|f| quoted(f)).collect::<Vec<_>>().join(","))
            .collect();
        text.push_str(&lines.join("\n"));
        if last_newline {
            text.push('\n');
        }
        std::fs::write(&path, &text).unwrap();
        let source = CsvSource::build(&spec(&path, header)).unwrap();
        let mut chunking = etl_model::Chunking::windows("", 1);
        chunking.range_rows = range_rows;
        let plan = etl_pg::block_on(source.plan(&chunking)).unwrap();
        let chunks: Vec<_> = plan.chunks.iter().map(|c| c.chunk.clone()).collect();

        // The ranges meet, from the header's end to the file's end.
        let data_start = if header { 4 } else { 0 };
        prop_assert_eq!(chunks[0].start, data_start);
        prop_assert_eq!(chunks.last().unwrap().end, text.len() as i64);
        for w in chunks.windows(2) {
            prop_assert_eq!(w[0].end, w[1].start);
        }
        prop_assert_eq!(
            plan.chunks.iter().map(|c| c.rows).sum::<u64>(),
            records.len() as u64
        );
        // Each record read once, in order.
        prop_assert_eq!(read_all(&source, &chunks), records);
    }
}
