//! The hot paths on the fleet time series shape (8 columns: 4 text,
//! timestamptz, boolean, bigint, double; one value column set per row),
//! from a fixed seed: binary COPY encode and decode (throughput in bytes of
//! COPY data), Parquet writes (in rows), and the pivot kernel on one ship's
//! day of 250 channels (in readings).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::Schema;
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use etl::pg_binary::decode::CopyDecoder;
use etl::pg_binary::encode::CopyEncoder;
use etl::pg_binary::PgType;

const ROWS: usize = 65_536;

fn types() -> Vec<PgType> {
    use PgType::*;
    vec![Text, Text, Timestamptz, Text, Bool, Text, Int8, Float8]
}

/// A deterministic batch: 70% Decimal, 15% Integer, 10% Boolean, 5% String.
fn batch() -> RecordBatch {
    readings(0, ROWS)
}

/// `rows` readings from reading number `first`: 250 channels a minute.
fn readings(first: usize, rows: usize) -> RecordBatch {
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let names = [
        "ship_id",
        "data_channel_id",
        "created_time",
        "value_format",
        "bool_v",
        "str_v",
        "long_v",
        "double_v",
    ];
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .zip(types())
            .map(|(n, t)| t.arrow_field(n))
            .collect::<Vec<_>>(),
    ));
    let (mut ship, mut chan, mut time, mut fmt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut b, mut s, mut l, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in first..first + rows {
        let c = i % 250;
        ship.push(format!("IMO{}", 9_900_001 + i / 62_500));
        chan.push(format!("ch_{c:04}"));
        time.push(1_748_736_000_000_000i64 + (i / 250) as i64 * 60_000_000);
        let r = next();
        let kind = c % 20;
        let (f, bv, sv, lv, dv) = match kind {
            0..=13 => (
                "Decimal",
                None,
                None,
                None,
                Some((r % 1_000_000) as f64 / 1000.0),
            ),
            14..=16 => ("Integer", None, None, Some((r % 100_000) as i64), None),
            17 | 18 => ("Boolean", Some(r % 2 == 0), None, None, None),
            _ => ("String", None, Some(format!("state_{}", r % 7)), None, None),
        };
        fmt.push(f);
        b.push(bv);
        s.push(sv);
        l.push(lv);
        d.push(dv);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ship)),
        Arc::new(StringArray::from(chan)),
        Arc::new(TimestampMicrosecondArray::from(time).with_timezone("UTC")),
        Arc::new(StringArray::from(fmt)),
        Arc::new(BooleanArray::from(b)),
        Arc::new(StringArray::from(s)),
        Arc::new(Int64Array::from(l)),
        Arc::new(Float64Array::from(d)),
    ];
    RecordBatch::try_new(schema, columns).expect("columns match the schema")
}

fn encode(encoder: &CopyEncoder, batch: &RecordBatch) -> BytesMut {
    let mut out = BytesMut::with_capacity(8 << 20);
    CopyEncoder::write_header(&mut out);
    encoder
        .write_batch(batch, &mut out)
        .expect("the batch encodes");
    CopyEncoder::write_footer(&mut out);
    out
}

fn codecs(c: &mut Criterion) {
    let batch = batch();
    let types = types();
    let schema = batch.schema();
    let pairs: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref())
        .zip(types.iter())
        .collect();
    let encoder = CopyEncoder::new(&pairs).expect("types match");
    let bytes = encode(&encoder, &batch);

    let mut group = c.benchmark_group("copy_binary");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function(
        BenchmarkId::new("encode", format!("timeseries_{ROWS}_rows")),
        |b| b.iter(|| encode(&encoder, &batch)),
    );
    group.bench_function(
        BenchmarkId::new("decode", format!("timeseries_{ROWS}_rows")),
        |b| {
            b.iter(|| {
                // Fed in 64 KiB pieces, as a socket would deliver them.
                let mut d = CopyDecoder::new(schema.clone(), &types, ROWS, usize::MAX);
                let mut rows = 0;
                for piece in bytes.chunks(64 * 1024) {
                    d.feed(piece).expect("valid stream");
                    while let Some(b) = d.next_batch().expect("valid stream") {
                        rows += b.num_rows();
                    }
                }
                while let Some(b) = d.finish().expect("valid stream") {
                    rows += b.num_rows();
                }
                assert_eq!(rows, ROWS);
            })
        },
    );
    group.finish();
}

fn parquet_write(c: &mut Criterion) {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;
    let batch = batch();
    let mut group = c.benchmark_group("parquet_write");
    group.throughput(Throughput::Elements(ROWS as u64));
    for (name, compression) in [
        ("zstd", Compression::ZSTD(ZstdLevel::default())),
        ("snappy", Compression::SNAPPY),
        ("none", Compression::UNCOMPRESSED),
    ] {
        group.bench_function(
            BenchmarkId::new(name, format!("timeseries_{ROWS}_rows")),
            |b| {
                b.iter(|| {
                    let props = WriterProperties::builder()
                        .set_compression(compression)
                        .build();
                    let mut out = Vec::with_capacity(4 << 20);
                    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))
                        .expect("schema is writable");
                    w.write(&batch).expect("batch writes");
                    w.close().expect("file closes");
                    out.len()
                })
            },
        );
    }
    group.finish();
}

fn pivot_kernel(c: &mut Criterion) {
    use etl::config::validate::PivotSpec;
    use etl::transform::pivot::Pivot;
    // One chunk as `etl run` cuts the standard set: a ship's day, 250
    // channels x 1,440 minutes, in 65,536-row batches.
    const DAY: usize = 250 * 1440;
    let batches: Vec<RecordBatch> = (0..DAY)
        .step_by(ROWS)
        .map(|at| readings(at, ROWS.min(DAY - at)))
        .collect();
    let mut group = c.benchmark_group("pivot");
    group.throughput(Throughput::Elements(DAY as u64));
    for text in [false, true] {
        let spec = PivotSpec {
            index: vec!["created_time".into()],
            name_column: "data_channel_id".into(),
            format_column: "value_format".into(),
            values: [
                ("Boolean", "bool_v"),
                ("Decimal", "double_v"),
                ("Integer", "long_v"),
                ("String", "str_v"),
            ]
            .iter()
            .map(|(f, c)| (f.to_string(), c.to_string()))
            .collect(),
            text,
            max_columns: 1500,
            column_groups: None,
        };
        let pivot = Pivot::build(0, &spec, batches[0].schema()).expect("columns exist");
        let name = if text { "text" } else { "typed" };
        group.bench_function(
            BenchmarkId::new(name, format!("one_day_{DAY}_readings")),
            |b| {
                b.iter(|| {
                    let (wide, counts) = pivot.pivot(&batches).expect("pivots");
                    assert_eq!(counts.wide_rows, 1440);
                    wide
                })
            },
        );
        if !text {
            // The same chunk as a run pivots it: the stage's DataFusion
            // operator (pass one, then PivotExec executed), batches out.
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime");
            group.bench_function(
                BenchmarkId::new("typed_operator", format!("one_day_{DAY}_readings")),
                |b| {
                    b.iter(|| {
                        rt.block_on(async {
                            use etl::transform::{Flow, Transform};
                            use futures_util::StreamExt;
                            let input = futures_util::stream::iter(
                                batches.iter().cloned().map(Ok).collect::<Vec<_>>(),
                            );
                            let flow = pivot
                                .apply(Flow::Stream(Box::pin(input)), Default::default())
                                .await
                                .expect("pivots");
                            let mut out = flow.into_stream();
                            let mut rows = 0;
                            while let Some(b) = out.next().await {
                                rows += b.expect("a batch").num_rows();
                            }
                            assert_eq!(rows, 1440);
                        })
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, codecs, parquet_write, pivot_kernel);
criterion_main!(benches);
