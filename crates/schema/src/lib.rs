//! `etl schema`: what differs between two PostgreSQL databases, the
//! ordered SQL that makes the second match the first with every statement
//! graded by its risk on the live table, and applying it without blocking
//! production.
//!
//! - [`catalog`] reads a database's schema from its catalog;
//! - [`diff`] compares two catalogs by name;
//! - [`plan`] turns the differences into statements in dependency order
//!   (from `pg_depend`), in their safer forms, each with a risk grade, its
//!   rule id and its reasons (the lock, a rewrite or scan, the table's size
//!   on the target), and counts the rows that would make one fail;
//! - [`apply`] runs them under short `lock_timeout`s, names the sessions in
//!   the way, skips and retries what stays blocked, and writes the history;
//! - [`staged`] keeps a change cut into expand / backfill / contract in
//!   the target, between the applies of its stages;
//! - [`targets`] resolves a URL or a `[targets.NAME]` of the targets file.
//!
//! Written by hand: the Rust crates that diff PostgreSQL schemas generate
//! SQL without grading it, taking a lock timeout, or knowing the live
//! table's size; the tools that grade (squawk) lint SQL files without
//! knowing the target. What etl adds is knowing both servers.
//!
//! Must not know: Arrow, DataFusion, sources, sinks, the chunk runner; it
//! talks to servers only through `etl-pg` (pool, retry, errors).

pub mod apply;
pub mod catalog;
pub mod diff;
pub mod plan;
pub mod rename;
pub mod staged;
pub mod targets;

use std::fmt;

/// What kind of object a key names; also the tie-break of the plan's
/// order where `pg_depend` leaves it free.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Schema,
    Extension,
    Collation,
    Type,
    Sequence,
    Function,
    Table,
    Column,
    Constraint,
    Index,
    View,
    Trigger,
    Policy,
    Grant,
    Comment,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Kind::Schema => "schema",
            Kind::Extension => "extension",
            Kind::Collation => "collation",
            Kind::Type => "type",
            Kind::Sequence => "sequence",
            Kind::Function => "function",
            Kind::Table => "table",
            Kind::Column => "column",
            Kind::Constraint => "constraint",
            Kind::Index => "index",
            Kind::View => "view",
            Kind::Trigger => "trigger",
            Kind::Policy => "policy",
            Kind::Grant => "grant",
            Kind::Comment => "comment",
        };
        f.write_str(s)
    }
}

/// An object by kind and qualified name (`public.t`, `public.t.c` for a
/// column, `public.t.fk` for a constraint, `public.f(integer)`).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Key {
    pub kind: Kind,
    pub name: String,
}

impl Key {
    pub fn new(kind: Kind, name: &str) -> Key {
        Key {
            kind,
            name: name.to_string(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// How much a statement can hurt the live database.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Risk {
    Low,
    Medium,
    High,
    VeryHigh,
}

impl Risk {
    /// Every grade, lowest first.
    pub const ALL: [Risk; 4] = [Risk::Low, Risk::Medium, Risk::High, Risk::VeryHigh];

    /// How the grade is written: `low`, `medium`, `high`, `very-high`.
    pub fn name(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
            Risk::VeryHigh => "very-high",
        }
    }

    /// A grade by its [`Risk::name`].
    pub fn named(name: &str) -> Option<Risk> {
        Risk::ALL.into_iter().find(|r| r.name() == name)
    }

    pub fn up(self) -> Risk {
        match self {
            Risk::Low => Risk::Medium,
            Risk::Medium => Risk::High,
            _ => Risk::VeryHigh,
        }
    }

    pub fn down(self) -> Risk {
        match self {
            Risk::VeryHigh => Risk::High,
            Risk::High => Risk::Medium,
            _ => Risk::Low,
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(transparent)]
    Connect(#[from] etl_pg::ConnectError),
    #[error("reading the {what} of the catalog: {}", etl_pg::error::pg_message(.source))]
    Read {
        what: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("{context}: {}", etl_pg::error::pg_message(.source))]
    Postgres {
        context: String,
        source: tokio_postgres::Error,
    },
    #[error("{0}")]
    Targets(String),
    /// A rollback file that is not as `etl schema apply` writes it.
    #[error("{0}")]
    RollbackFile(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// What came back from the retry helper (it judges [`EtlError`]s).
    #[error(transparent)]
    Etl(#[from] etl_pg::error::EtlError),
}

/// For the retry helper: the kind kept (a lost connection stays transient).
impl From<SchemaError> for etl_pg::error::EtlError {
    fn from(e: SchemaError) -> Self {
        use etl_pg::error::EtlError;
        match e {
            SchemaError::Connect(e) => EtlError::Connect(e),
            SchemaError::Read { what, source } => EtlError::Postgres {
                context: format!("reading the {what} of the catalog"),
                source,
            },
            SchemaError::Postgres { context, source } => EtlError::Postgres { context, source },
            SchemaError::Io { context, source } => EtlError::Io { context, source },
            SchemaError::Etl(e) => e,
            SchemaError::Targets(why) | SchemaError::RollbackFile(why) => EtlError::Config(why),
        }
    }
}

impl SchemaError {
    pub fn pg(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SchemaError {
        let context = context.into();
        move |source| SchemaError::Postgres { context, source }
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SchemaError {
        let context = context.into();
        move |source| SchemaError::Io { context, source }
    }
}
