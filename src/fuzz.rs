//! Fuzz targets: each takes arbitrary bytes and must never panic, whatever
//! they hold; some also check a property (what is written reads back the
//! same). `examples/fuzz.rs` runs them with mutated inputs for a bounded
//! time (`scripts/fuzz.sh`); the tests below replay the seed corpus and
//! every input a run found (`fuzz/corpus/TARGET/`), so a fixed finding
//! stays fixed.
//!
//! Hand-written drivers rather than cargo-fuzz: cargo-fuzz needs a nightly
//! toolchain, and these run on the stable one the project builds with. The
//! targets are plain functions, so a cargo-fuzz or AFL harness is a few
//! lines each where a nightly toolchain is at hand.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::Schema;

use crate::pg_binary::decode::CopyDecoder;
use crate::pg_binary::PgType;

/// A target's name, and the function that takes an input.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by the name of its corpus folder.
pub const TARGETS: &[Target] = &[
    ("copy", copy),
    ("pipeline", pipeline),
    ("failed_csv", failed_csv),
    ("odbc_text", odbc_text),
    ("connection", connection),
    ("access", access),
];

/// The types a COPY input's first bytes choose from.
fn copy_types() -> Vec<PgType> {
    use PgType::*;
    vec![
        Bool,
        Int2,
        Int4,
        Int8,
        Float4,
        Float8,
        Decimal {
            precision: 12,
            scale: 2,
        },
        NumericText,
        Text,
        Jsonb,
        Bytea,
        Date,
        Time,
        Timestamp,
        Timestamptz,
        Interval,
        Uuid,
        Array {
            element: Box::new(Int4),
            element_oid: 23,
        },
        Array {
            element: Box::new(Text),
            element_oid: 25,
        },
        Array {
            element: Box::new(Decimal {
                precision: 10,
                scale: 2,
            }),
            element_oid: 1700,
        },
    ]
}

/// The binary COPY decoder. Byte 0: the number of columns (1 to 4);
/// then one byte per column choosing its type; then one byte saying
/// where the stream is cut in two pieces (the decoder is fed in pieces, as
/// from the network); then the stream.
pub fn copy(data: &[u8]) {
    let _ = copy_rows(data);
}

/// [`copy`], with the rows decoded, or why not.
fn copy_rows(data: &[u8]) -> Result<u64, String> {
    let Some((&n, rest)) = data.split_first() else {
        return Err("empty".into());
    };
    let n = (n % 4) as usize + 1;
    if rest.len() < n + 1 {
        return Err("no types".into());
    }
    let all = copy_types();
    let types: Vec<PgType> = rest[..n]
        .iter()
        .map(|b| all[*b as usize % all.len()].clone())
        .collect();
    let cut = rest[n] as usize;
    let stream = &rest[n + 1..];
    let fields: Vec<_> = types
        .iter()
        .enumerate()
        .map(|(i, t)| t.arrow_field(&format!("c{i}")))
        .collect();
    let mut decoder = CopyDecoder::new(Arc::new(Schema::new(fields)), &types, 3, 1 << 12);
    let (a, b) = stream.split_at(cut.min(stream.len()));
    for piece in [a, b] {
        decoder.feed(piece).map_err(|e| e.to_string())?;
        while decoder.next_batch().map_err(|e| e.to_string())?.is_some() {}
    }
    decoder.finish().map_err(|e| e.to_string())?;
    Ok(decoder.rows())
}

/// The pipeline parser and validator, on the input as text.
pub fn pipeline(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(p) = crate::config::parse(&text) {
        let _ = crate::config::validate::validate(p, &text);
    }
}

/// The failed-chunk CSV parser; what it reads, written again, reads back
/// the same.
pub fn failed_csv(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(chunks) = crate::run::failed_csv::parse(text) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("etl-fuzz-{}", std::process::id()));
    let path = dir.join("failed.csv");
    crate::run::failed_csv::write(&path, &chunks).expect("write the CSV");
    let again = crate::run::failed_csv::read(&path).expect("what etl wrote reads back");
    assert_eq!(
        again, chunks,
        "the CSV read back differs from what was written"
    );
}

/// Narrow text decoding as an ODBC source does it. Byte 0: the code page;
/// byte 1: replace invalid text (odd) or fail, and cut long values (bit 1)
/// or fail; byte 2: the longest value in bytes; then values split at 0xFF
/// (0xFE alone: NULL).
pub fn odbc_text(data: &[u8]) {
    let [page, flags, max, values @ ..] = data else {
        return;
    };
    let pages = [
        encoding_rs::EUC_KR,
        encoding_rs::SHIFT_JIS,
        encoding_rs::GB18030,
        encoding_rs::BIG5,
        encoding_rs::WINDOWS_1252,
        encoding_rs::UTF_8,
    ];
    let options = crate::source::odbc::OdbcOptions {
        encoding: pages[*page as usize % pages.len()],
        replace_invalid: flags & 1 == 1,
        batch_rows: 100,
        batch_bytes: 1 << 20,
        max_text_bytes: (*max as usize).max(1),
        truncate_long: flags & 2 == 2,
        casts: BTreeMap::new(),
        row_by_row: false,
        text_buffers: BTreeMap::new(),
    };
    let values = values
        .split(|b| *b == 0xFF)
        .map(|v| if v == [0xFE] { None } else { Some(v) });
    let (mut replaced, mut truncated) = (BTreeMap::new(), BTreeMap::new());
    let decoded =
        crate::source::odbc::decode_texts(&options, &mut replaced, &mut truncated, "c", 0, values);
    if let Ok(array) = decoded {
        use arrow::array::{Array, AsArray};
        let strings = array.as_string::<i32>();
        for i in 0..strings.len() {
            if !strings.is_null(i) && !options.truncate_long {
                assert!(strings.value(i).len() <= options.max_text_bytes * 3 + 3);
            }
        }
    }
}

/// Connection strings (URL or key=value, with the TLS keys etl takes out
/// of them), table names and type names: what is taken out and written
/// again parses the same.
pub fn connection(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // What is left for tokio-postgres, when it reads it, holds no TLS key.
    if let Ok((rest, _)) = crate::pg::TlsOptions::extract(&text) {
        if rest.parse::<tokio_postgres::Config>().is_ok() {
            let again = crate::pg::TlsOptions::extract(&rest);
            assert_eq!(
                again,
                Ok((rest.clone(), crate::pg::TlsOptions::default())),
                "the rest holds no TLS key once taken out"
            );
        }
    }
    if let Ok(name) = crate::sql::type_name(&text) {
        assert_eq!(
            crate::sql::type_name(&name).as_deref(),
            Ok(name.as_str()),
            "a type name written again reads the same"
        );
    }
    if let Ok(table) = crate::sql::TableName::parse(&text) {
        assert_eq!(
            crate::sql::TableName::parse(&table.qualified())
                .map(|t| t.qualified())
                .as_deref(),
            Ok(table.qualified().as_str()),
            "a table name written again reads the same"
        );
    }
}

/// An Access file, read as a migration reads it: the tables, the catalog
/// (keys, relationships) and every row of up to 20 tables. A damaged file
/// must give an error, never a panic (or a hang, which the driver's time
/// limit shows).
pub fn access(data: &[u8]) {
    use crate::source::access::{catalog, table_names, AccessTable, ReadOptions};
    use crate::source::Source;
    use futures_util::StreamExt;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "etl-fuzz-access-{}-{}.mdb",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let read = || -> Result<(), crate::error::EtlError> {
        let names: Vec<String> = table_names(&path)?.into_iter().take(20).collect();
        let _ = catalog(&path, &names);
        let options = ReadOptions {
            batch_rows: 100,
            ..Default::default()
        };
        for name in &names {
            let Ok(table) = AccessTable::open(&path, name, &[], &options) else {
                continue;
            };
            crate::pg::block_on(async {
                let chunk = crate::plan::Chunk::whole(Some(name.clone()));
                if let Ok(mut batches) = table.open(&chunk).await {
                    while let Some(Ok(_)) = batches.next().await {}
                }
            });
        }
        Ok(())
    };
    let _ = read();
    let _ = std::fs::remove_file(&path);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed and every finding kept in fuzz/corpus, through its target.
    #[test]
    fn the_corpus_replays_without_a_panic() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut replayed = 0;
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let result = std::panic::catch_unwind(|| target(&data));
                assert!(result.is_ok(), "{name}: {} panics", path.display());
                replayed += 1;
            }
        }
        assert!(
            replayed >= TARGETS.len() * 2,
            "{replayed} inputs in the corpus"
        );
    }

    /// The COPY seeds are streams PostgreSQL wrote: they decode whole, so
    /// mutations start from inputs that reach every type's decoder.
    #[test]
    fn the_copy_seeds_decode() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/copy");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("crash-") || name.starts_with("regress-") {
                continue;
            }
            let rows = copy_rows(&std::fs::read(&path).unwrap());
            assert!(
                matches!(rows, Ok(n) if n > 0),
                "{}: {rows:?}",
                path.display()
            );
        }
    }
}
