//! A chunk's pivot between its two passes: the readings and where each
//! goes (pass one done), waiting for pass two. Read as a stream it runs
//! pass two directly; under a SQL stage it becomes the DataFusion table of
//! [`super::exec`], whose plan runs pass two. A pipeline whose only stage
//! is the pivot never plans anything, so it runs the same in a build
//! without SQL stages.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures_util::StreamExt;

use super::kernel::{fill, Placed};
use super::{arrow_error, log_counts, Notes, OUTPUT_ROWS};
use etl_model::BatchStream;
use etl_pg::error::EtlError;

/// One chunk after pass one.
pub struct Pending {
    batches: Vec<RecordBatch>,
    placed: Placed,
    notes: Notes,
}

impl Pending {
    pub(super) fn new(batches: Vec<RecordBatch>, placed: Placed, notes: Notes) -> Self {
        Pending {
            batches,
            placed,
            notes,
        }
    }

    /// The wide rows' schema: the chunk's channels with their kinds.
    pub fn schema(&self) -> SchemaRef {
        self.placed.schema.clone()
    }

    /// Pass two: the wide rows (only the `projection`'s columns, when
    /// given), in slices of at most [`OUTPUT_ROWS`]; the counts go into
    /// the chunk's notes.
    pub fn fill(self, projection: Option<&[usize]>) -> Result<Vec<RecordBatch>, EtlError> {
        let Pending {
            batches,
            placed,
            notes,
        } = self;
        let (wide, counts) = fill(&batches, placed)?;
        drop(batches);
        log_counts(&counts);
        notes.lock().expect("no panic while holding the lock").pivot = Some(counts);
        let Some(wide) = wide else {
            return Ok(Vec::new());
        };
        let wide = match projection {
            Some(p) => wide.project(p).map_err(arrow_error)?,
            None => wide,
        };
        Ok((0..wide.num_rows())
            .step_by(OUTPUT_ROWS)
            .map(|at| wide.slice(at, OUTPUT_ROWS.min(wide.num_rows() - at)))
            .collect())
    }

    /// Pass two as the chunk's stream of wide rows.
    pub fn into_stream(self) -> BatchStream {
        Box::pin(
            futures_util::stream::once(async move { self.fill(None) }).flat_map(|wide| {
                let batches: Vec<Result<RecordBatch, EtlError>> = match wide {
                    Ok(slices) => slices.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                };
                futures_util::stream::iter(batches)
            }),
        )
    }
}
