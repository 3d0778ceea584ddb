//! Transforms: stages between the source and the sinks, run inside each
//! chunk. Each stage's output schema is known before any chunk runs
//! (planned against an empty input), so sinks can create and check their
//! tables up front.
//!
//! - `sql` a SQL stage on DataFusion: the chunk's rows as a table, the
//!   query over it. Only with the `sql` feature (on by default in the
//!   `etl` binary): DataFusion is two thirds of etl's build, so a build
//!   without it (`scripts/demo.sh`'s) is done in half the time and refuses
//!   SQL stages saying how to get them ([`check_sql`]).
//! - [`pivot`] the narrow-to-wide pivot of EAV rows: run by itself, or as a
//!   DataFusion operator under a SQL stage.
//! - [`spec`] the stages as the pipeline file's validation leaves them.
//!
//! Must not know: sources, sinks, the ledger, the runner; rows arrive as
//! an `etl_model::BatchStream` and leave as a [`Flow`].

pub mod pivot;
pub mod spec;
#[cfg(feature = "sql")]
pub mod sql;

use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
#[cfg(feature = "sql")]
use datafusion::error::DataFusionError;

use crate::spec::ValidatedTransform;
use etl_model::BatchStream;
use etl_pg::error::EtlError;

#[async_trait]
pub trait Transform: Send + Sync {
    /// Schema of every batch this stage produces.
    fn output_schema(&self) -> SchemaRef;
    /// Runs the stage over one chunk's rows; what it notices about the
    /// chunk's rows goes into `notes`.
    async fn apply(&self, input: Flow, notes: Notes) -> Result<Flow, EtlError>;
    /// What a pivot stage reads from the narrow rows, when this is one:
    /// its batches' columns change from chunk to chunk, and sinks write
    /// them as wide tables (`only_stage` is the runner's to set).
    fn pivot_rules(&self) -> Option<etl_model::wide::PivotRules> {
        None
    }
}

/// A chunk's rows between stages: a stream of batches, or a pivot's chunk
/// after its first pass (so that a SQL stage after it plans over the
/// pivot's operator).
pub enum Flow {
    Stream(BatchStream),
    Pivoted(Box<pivot::Pending>),
}

impl Flow {
    /// The rows as batches: a pivot's second pass runs as they are read
    /// (their schema and metadata kept).
    pub fn into_stream(self) -> BatchStream {
        match self {
            Flow::Stream(s) => s,
            Flow::Pivoted(pending) => pending.into_stream(),
        }
    }
}

/// Why a SQL stage is refused by a build without the `sql` feature, and
/// how to get one that runs it.
pub const WITHOUT_SQL: &str = "needs SQL stages, which this etl was built without (scripts/demo.sh builds it without DataFusion for a quick first run); build the whole etl with `cargo build --release --locked` (or `cargo install --path .`) and run it again";

/// Whether `query` parses as a SQL stage this build runs (the pipeline
/// file's check, before any connection); what to change when not.
pub fn check_sql(query: &str) -> Result<(), String> {
    #[cfg(feature = "sql")]
    return sql::check_syntax(query).map_err(|e| format!("is not valid SQL: {e}"));
    #[cfg(not(feature = "sql"))]
    {
        let _ = query;
        Err(WITHOUT_SQL.to_string())
    }
}

/// What the stages noticed about one chunk's rows, read once it commits.
#[derive(Debug, Default, Clone)]
pub struct ChunkNotes {
    pub pivot: Option<pivot::PivotCounts>,
    /// Given before the chunk runs: channels whose wide columns the sinks
    /// have as text already; a pivot makes their cells text, comparing
    /// repeated readings as text.
    pub text_channels: std::collections::HashSet<String>,
}

pub type Notes = Arc<Mutex<ChunkNotes>>;

/// Builds the stages in order, each planned on the schema of the one before.
pub async fn build(
    specs: &[ValidatedTransform],
    input: SchemaRef,
) -> Result<Vec<Arc<dyn Transform>>, EtlError> {
    let mut schema = input;
    let mut stages: Vec<Arc<dyn Transform>> = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let stage: Arc<dyn Transform> = match spec {
            #[cfg(feature = "sql")]
            ValidatedTransform::Sql { query } => {
                Arc::new(sql::SqlTransform::build(index, query, schema.clone()).await?)
            }
            #[cfg(not(feature = "sql"))]
            ValidatedTransform::Sql { .. } => {
                return Err(EtlError::Config(format!(
                    "transforms[{index}] {WITHOUT_SQL}"
                )))
            }
            ValidatedTransform::Pivot(spec) => {
                Arc::new(pivot::Pivot::build(index, spec, schema.clone())?)
            }
        };
        schema = stage.output_schema();
        stages.push(stage);
    }
    Ok(stages)
}

/// A DataFusion error as etl's: an etl error that travelled through
/// DataFusion comes back as itself; any other names the stage.
#[cfg(feature = "sql")]
pub fn from_datafusion(index: usize, e: DataFusionError) -> EtlError {
    match e {
        DataFusionError::External(inner) => match inner.downcast::<EtlError>() {
            Ok(etl) => *etl,
            Err(other) => EtlError::Transform {
                index,
                message: other.to_string(),
            },
        },
        DataFusionError::Context(context, inner) => match from_datafusion(index, *inner) {
            EtlError::Transform { index, message } => EtlError::Transform {
                index,
                message: format!("{context}: {message}"),
            },
            other => other,
        },
        other => EtlError::Transform {
            index,
            message: other.to_string(),
        },
    }
}
