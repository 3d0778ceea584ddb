//! What a source is, once the pipeline file's values all make sense: the
//! closed set of sources ([`ValidatedSource`]); each source's settings are
//! its own module's, named here too. The command line's config layer builds
//! these; [`crate::build`] opens them.

pub use crate::access::AccessSpec;
pub use crate::csv::CsvSpec;
pub use crate::odbc::{OdbcRelation, OdbcSpec};
pub use crate::options::*;
pub use crate::postgres::{PgDatabaseSpec, Relation};
use etl_pg::Endpoint;

// Built once per run: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ValidatedSource {
    Postgres {
        endpoint: Endpoint,
        relation: Relation,
        batch_rows: usize,
        batch_bytes: usize,
        /// Columns of types etl cannot carry in Arrow (ranges, geometric
        /// types, ...) are read as their text (`::text`): set when every
        /// sink is a file, which writes them as text; a PostgreSQL sink
        /// would need the type itself, so there they are refused.
        uncarried_as_text: bool,
    },
    Parquet {
        pattern: String,
        batch_rows: usize,
    },
    Odbc(OdbcSpec),
    Csv(CsvSpec),
    Access(AccessSpec),
    /// A whole PostgreSQL database (or schemas, or a list of tables).
    PostgresDatabase(PgDatabaseSpec),
}
