//! A pipeline whose values all make sense, as the runner takes it.

use etl_model::Chunking;
use etl_sink::spec::ValidatedSink;
use etl_source::spec::ValidatedSource;
use etl_transform::spec::ValidatedTransform;

/// A pipeline whose values all make sense; building it only connects.
#[derive(Debug, Clone)]
pub struct ValidatedPipeline {
    pub name: String,
    pub source: ValidatedSource,
    pub chunks: Chunking,
    pub transforms: Vec<ValidatedTransform>,
    pub sinks: Vec<ValidatedSink>,
    pub checks: Vec<crate::checks::Check>,
}
