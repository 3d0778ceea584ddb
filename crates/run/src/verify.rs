//! `etl verify` and `etl plan` read the source for the sinks: a sink says
//! what it compares a chunk by ([`Basis`]) or what query it plans with
//! ([`etl_sink::WideTables::source_query`]); the runner reads that of the source and hands
//! the sink the answer, so no sink sees a source. A file sink's chunk is
//! compared here: the source's batches against the file read back.

use futures_util::StreamExt;

use etl_base::plan::Chunk;
use etl_model::verify::{ArrowChecksum, Basis, Comparison, Rows, SourceSide, WrittenFile};
use etl_pg::error::EtlError;
use etl_sink::Sink;
use etl_source::Source;

/// One chunk of one sink compared with the source.
pub(super) async fn compare(
    source: &dyn Source,
    sink: &dyn Sink,
    chunk: &Chunk,
) -> Result<Comparison, EtlError> {
    let Some(verifiable) = sink.verifiable() else {
        return Err(EtlError::Config(format!(
            "{} cannot be compared with the source: etl verify checks PostgreSQL, Parquet and CSV sinks",
            sink.name()
        )));
    };
    let side = match verifiable.basis(chunk)? {
        Basis::File(file) => return compare_file(source, chunk, &file).await,
        Basis::Sql { columns } => match (source.sql(), source.counting()) {
            (Some(sql), _) => SourceSide::Checksum(sql.sql_checksum(chunk, &columns).await?),
            // A source without SQL checksums (ODBC) is compared by counts.
            (None, Some(counting)) => match counting.count(chunk).await? {
                Some(rows) => SourceSide::Count(rows),
                None => return Err(no_count()),
            },
            (None, None) => return Err(no_count()),
        },
        Basis::Queries(queries) => {
            let mut answers = Vec::with_capacity(queries.len());
            for query in queries {
                let sql = source.sql().ok_or_else(|| {
                    EtlError::Config(format!(
                        "{} compares chunks by SQL over the source's rows (a pivot's wide tables); this source has no SQL: verify a pivot read from PostgreSQL",
                        sink.name()
                    ))
                })?;
                answers.push(sql.sql_rows(Some(chunk), &*query).await?);
            }
            SourceSide::Rows(answers)
        }
    };
    match sink.tables() {
        Some(tables) => tables.verify(chunk, side).await,
        None => Err(EtlError::Bug(format!(
            "chunk {chunk}: {} gave a basis of SQL but has no tables to compare it in",
            sink.name()
        ))),
    }
}

/// The source's batches against the file a sink wrote, both as Arrow
/// rows; no file: nothing in the target.
async fn compare_file(
    source: &dyn Source,
    chunk: &Chunk,
    file: &WrittenFile,
) -> Result<Comparison, EtlError> {
    let mut expected = ArrowChecksum::new();
    let mut stream = source.open(chunk).await?;
    while let Some(batch) = stream.next().await {
        expected.add(&batch?)?;
    }
    let target = if file.path.is_file() {
        let mut sum = ArrowChecksum::new();
        for batch in etl_source::read_back(file)? {
            sum.add(&batch?)?;
        }
        Some(sum.finish())
    } else {
        None
    };
    Ok(Comparison {
        counts_only: false,
        source: expected.finish(),
        target,
    })
}

/// The rows of the sink's [`etl_sink::WideTables::source_query`] over all the source's
/// rows; `None` when it has none or the source has no SQL.
pub(super) async fn source_rows(
    source: &dyn Source,
    sink: &dyn Sink,
) -> Result<Option<Rows>, EtlError> {
    match sink.wide().and_then(|w| w.source_query()) {
        Some(query) => match source.sql() {
            Some(sql) => Ok(Some(sql.sql_rows(None, &*query).await?)),
            None => Ok(None),
        },
        None => Ok(None),
    }
}

/// A source that can neither checksum nor count a chunk's rows.
fn no_count() -> EtlError {
    EtlError::Config(
        "this source can neither checksum nor count a chunk's rows in a PostgreSQL target; verify supports PostgreSQL, ODBC and Access sources, and CSV and Parquet files read in time windows ([chunks] time_column), not byte ranges or whole files (into CSV or Parquet files every source is compared value by value)"
            .into(),
    )
}
