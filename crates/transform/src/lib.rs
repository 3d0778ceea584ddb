//! Transforms: stages between the source and the sinks, run inside each
//! chunk on DataFusion. Each stage's output schema is known before any
//! chunk runs (planned against an empty input), so sinks can create and
//! check their tables up front.
//!
//! - [`sql`] a SQL stage: the chunk's rows as a table, the query over it.
//! - [`pivot`] the narrow-to-wide pivot of EAV rows, a DataFusion operator.
//! - [`spec`] the stages as the pipeline file's validation leaves them.
//!
//! Must not know: sources, sinks, the ledger, the runner; rows arrive as
//! an `etl_model::BatchStream` and leave as a [`Flow`].

pub mod pivot;
pub mod spec;
pub mod sql;

use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::error::DataFusionError;
use futures_util::StreamExt;

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

/// A chunk's rows between stages: a stream of batches, or a table a
/// DataFusion plan reads (the pivot's, so that a SQL stage after it plans
/// over the pivot's operator).
pub enum Flow {
    Stream(BatchStream),
    Table(Arc<dyn TableProvider>),
}

impl Flow {
    /// The rows as batches: a table's plan executed as it is (its schema
    /// and metadata kept). `index` names the stage in errors.
    pub async fn into_stream(self, index: usize) -> Result<BatchStream, EtlError> {
        match self {
            Flow::Stream(s) => Ok(s),
            Flow::Table(table) => {
                let ctx = sql::context();
                let plan = table
                    .scan(&ctx.state(), None, &[], None)
                    .await
                    .map_err(|e| from_datafusion(index, e))?;
                let stream = plan
                    .execute(0, ctx.task_ctx())
                    .map_err(|e| from_datafusion(index, e))?;
                Ok(Box::pin(stream.map(move |batch| {
                    batch.map_err(|e| from_datafusion(index, e))
                })))
            }
        }
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
            ValidatedTransform::Sql { query } => {
                Arc::new(sql::SqlTransform::build(index, query, schema.clone()).await?)
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
