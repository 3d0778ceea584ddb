//! What the layers above pass between them: the shape of the work and of
//! the rows, nothing that does I/O.
//!
//! - [`Chunking`] how the work is cut and run (`[chunks]`), as the planners
//!   and the runner read it; the chunks themselves are `etl_base::plan`'s.
//! - [`wide`] the wide-rows contract: a pivot's output, as sinks and the
//!   Parquet source read it from a batch's schema.
//! - [`verify`] row counts and order-free checksums, compared per chunk.
//!
//! Must not know: any particular source, transform, sink, the ledger or
//! the runner; it may use Arrow and `etl-pg`'s text rules.
mod chunking;
pub mod verify;
pub mod wide;

pub use chunking::Chunking;
