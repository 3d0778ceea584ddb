//! `[[transforms]] type = "sql"`: a query over the previous stage, which it
//! reads as the table `input`. The chunk's batches stream through it; a
//! query that aggregates holds what its aggregate needs, bounded by the chunk.
//!
//! After a pivot the input is wide rows ([`etl_model::wide`]) whose columns are
//! the chunk's channels, so the query is planned per chunk against the
//! chunk's own schema; its output stays wide rows of the same layout and
//! must keep the index columns.

use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures_util::StreamExt;

use super::{from_datafusion, Flow, Notes, Transform};
use etl_model::wide::WideLayout;
use etl_model::BatchStream;
use etl_pg::error::EtlError;

pub struct SqlTransform {
    index: usize,
    query: String,
    input: SchemaRef,
    output: SchemaRef,
    /// Set when the input is wide rows: planned per chunk.
    wide: Option<WideLayout>,
}

/// One context per chunk, single partition: chunks are etl's parallelism.
pub(crate) fn context() -> SessionContext {
    SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1))
}

impl SqlTransform {
    /// Plans the query against an empty `input` to learn its output schema.
    pub async fn build(index: usize, query: &str, input: SchemaRef) -> Result<Self, EtlError> {
        if let Some(layout) = WideLayout::of(&input)? {
            // The channels are known per chunk; the query is checked then.
            return Ok(SqlTransform {
                index,
                query: query.to_string(),
                output: input.clone(),
                input,
                wide: Some(layout),
            });
        }
        let ctx = context();
        let empty = MemTable::try_new(input.clone(), vec![vec![]])
            .map_err(|e| from_datafusion(index, e))?;
        ctx.register_table("input", Arc::new(empty))
            .map_err(|e| from_datafusion(index, e))?;
        let frame = ctx
            .sql(query)
            .await
            .map_err(|e| from_datafusion(index, e))?;
        let output = Arc::new(frame.schema().as_arrow().clone());
        Ok(SqlTransform {
            index,
            query: query.to_string(),
            input,
            output,
            wide: None,
        })
    }

    /// The chunk's rows as the table `input`: a stream becomes a
    /// streaming table of `schema`; a pivot's chunk becomes its operator's
    /// table (of the chunk's own schema).
    fn table(
        &self,
        schema: SchemaRef,
        input: Flow,
    ) -> Result<Arc<dyn datafusion::catalog::TableProvider>, EtlError> {
        match input {
            Flow::Pivoted(pending) => Ok(Arc::new(crate::pivot::exec::PivotTable::new(*pending))),
            Flow::Stream(stream) => {
                let partition = Arc::new(OneShot {
                    schema: schema.clone(),
                    stream: Mutex::new(Some(stream)),
                });
                Ok(Arc::new(
                    StreamingTable::try_new(schema, vec![partition])
                        .map_err(|e| from_datafusion(self.index, e))?,
                ))
            }
        }
    }

    /// Wide rows: the query planned against the chunk's wide schema (the
    /// pivot's table, or a stream's first batch), its output checked
    /// against the layout and marked with it.
    async fn apply_wide(&self, layout: &WideLayout, input: Flow) -> Result<Flow, EtlError> {
        let index = self.index;
        let table = match input {
            pivoted @ Flow::Pivoted(_) => self.table(self.input.clone(), pivoted)?,
            Flow::Stream(mut stream) => {
                let Some(first) = stream.next().await else {
                    return Ok(Flow::Stream(stream));
                };
                let first = first?;
                let schema = first.schema();
                let rest = futures_util::stream::once(async move { Ok(first) }).chain(stream);
                self.table(schema, Flow::Stream(Box::pin(rest)))?
            }
        };
        let output = self.run(table).await?;
        let layout = layout.clone();
        let what = format!("transforms[{index}]");
        let mut checked: Option<SchemaRef> = None;
        Ok(Flow::Stream(Box::pin(output.map(move |batch| {
            let batch = batch?;
            let schema = match &checked {
                Some(s) => s.clone(),
                None => {
                    layout.columns(&batch.schema(), &what)?;
                    let s = Arc::new(layout.mark(&batch.schema()));
                    checked = Some(s.clone());
                    s
                }
            };
            batch
                .with_schema(schema)
                .map_err(|e| EtlError::Bug(format!("marking wide rows: {e}")))
        }))))
    }

    /// The query over one chunk's rows, registered as `input`.
    async fn run(
        &self,
        table: Arc<dyn datafusion::catalog::TableProvider>,
    ) -> Result<BatchStream, EtlError> {
        let index = self.index;
        let ctx = context();
        ctx.register_table("input", table)
            .map_err(|e| from_datafusion(index, e))?;
        let frame = ctx
            .sql(&self.query)
            .await
            .map_err(|e| from_datafusion(index, e))?;
        let stream = frame
            .execute_stream()
            .await
            .map_err(|e| from_datafusion(index, e))?;
        Ok(Box::pin(stream.map(move |batch| {
            batch.map_err(|e| from_datafusion(index, e))
        })))
    }
}

#[async_trait]
impl Transform for SqlTransform {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    async fn apply(&self, input: Flow, _notes: Notes) -> Result<Flow, EtlError> {
        match &self.wide {
            Some(layout) => self.apply_wide(layout, input).await,
            None => {
                let table = self.table(self.input.clone(), input)?;
                Ok(Flow::Stream(self.run(table).await?))
            }
        }
    }
}

/// The chunk's stream, handed to DataFusion once.
struct OneShot {
    schema: SchemaRef,
    stream: Mutex<Option<BatchStream>>,
}

impl std::fmt::Debug for OneShot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OneShot")
    }
}

impl PartitionStream for OneShot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self
            .stream
            .lock()
            .expect("no panic while holding the lock")
            .take();
        let stream: futures_util::stream::BoxStream<'static, Result<_, DataFusionError>> =
            match taken {
                Some(s) => s
                    .map(|b| b.map_err(|e| DataFusionError::External(Box::new(e))))
                    .boxed(),
                None => futures_util::stream::once(async {
                    Err(DataFusionError::Internal(
                        "a chunk's input was read twice; this is a bug in etl".into(),
                    ))
                })
                .boxed(),
            };
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// Whether `query` parses as SQL (the pipeline file's check, before any
/// connection); the parser's message when it does not.
pub fn check_syntax(query: &str) -> Result<(), String> {
    datafusion::sql::parser::DFParser::parse_sql(query)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
