//! `[[transforms]] type = "sql"`: a query over the previous stage, which it
//! reads as the table `input`. The chunk's batches stream through it; a
//! query that aggregates holds what its aggregate needs, bounded by the chunk.

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

use super::{from_datafusion, Notes, Transform};
use crate::error::EtlError;
use crate::source::BatchStream;

pub struct SqlTransform {
    index: usize,
    query: String,
    input: SchemaRef,
    output: SchemaRef,
}

/// One context per chunk, single partition: chunks are etl's parallelism.
fn context() -> SessionContext {
    SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1))
}

impl SqlTransform {
    /// Plans the query against an empty `input` to learn its output schema.
    pub async fn build(index: usize, query: &str, input: SchemaRef) -> Result<Self, EtlError> {
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
        })
    }
}

#[async_trait]
impl Transform for SqlTransform {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    async fn apply(&self, input: BatchStream, _notes: Notes) -> Result<BatchStream, EtlError> {
        let index = self.index;
        let ctx = context();
        let partition = Arc::new(OneShot {
            schema: self.input.clone(),
            stream: Mutex::new(Some(input)),
        });
        let table = StreamingTable::try_new(self.input.clone(), vec![partition])
            .map_err(|e| from_datafusion(index, e))?;
        ctx.register_table("input", Arc::new(table))
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
