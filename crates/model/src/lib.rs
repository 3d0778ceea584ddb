//! What the layers above pass between them: the shape of the work and of
//! the rows, nothing that does I/O.
//!
//! - [`Chunking`] how the work is cut and run (`[chunks]`), as the planners
//!   and the runner read it; the chunks themselves are `etl_base::plan`'s.
//! - [`wide`] the wide-rows contract: a pivot's output, as sinks and the
//!   Parquet source read it from a batch's schema.
//! - [`BatchStream`] one chunk's rows between the layers; [`CopyThrough`]
//!   a chunk handed over as PostgreSQL COPY data instead.
//! - [`verify`] row counts and order-free checksums, compared per chunk.
//! - [`ledger`] the ledger as the runner and a chunk's writer use it.
//!
//! Must not know: any particular source, transform, sink, ledger store or
//! the runner; it may use Arrow and `etl-pg`'s text rules.
pub mod chunking;
pub mod ledger;
pub mod verify;
pub mod wide;

pub use chunking::Chunking;

use std::pin::Pin;

use arrow::array::RecordBatch;
use etl_pg::error::EtlError;
use futures_util::Stream;

/// One chunk's rows, as a source gives them and a transform passes them on.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch, EtlError>> + Send>>;

/// One chunk as PostgreSQL COPY data, the bytes as the server sent them.
pub type CopyStream = Pin<Box<dyn Stream<Item = Result<bytes::Bytes, EtlError>> + Send>>;

/// What a source that hands its chunks over as COPY data gives: the
/// format, and the columns in the order of their values.
#[derive(Debug, Clone)]
pub struct CopyThrough {
    pub format: etl_pg::pg_binary::rows::CopyFormat,
    pub columns: Vec<String>,
    /// Each column's type OID (a domain's base type's): a sink takes the
    /// bytes only into columns of the same types, record batches
    /// otherwise. Empty: COPY data is all the source gives (a table of a
    /// whole database, whose target pre-data made).
    pub oids: Vec<u32>,
}
