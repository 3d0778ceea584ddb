//! What an ODBC source holds: its user tables, their columns, primary
//! keys, auto-numbered columns, indexes and foreign keys.
//!
//! Through the ODBC catalog functions (`SQLTables`, `SQLPrimaryKeys`,
//! `SQLForeignKeys`) and result-set metadata (`SQL_DESC_AUTO_UNIQUE_VALUE`)
//! where the driver implements them. The MDBTools driver answers
//! `SQLPrimaryKeys` and `SQLForeignKeys` with empty stubs, so for an Access
//! file the keys, AutoNumber columns, indexes and relationships come from
//! `mdb-schema` (same MDBTools release, its MySQL dialect, which keeps
//! names as written) instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use odbc_api::Connection;

use crate::catalog::{Action, Catalog, ForeignKey, Index};
use crate::odbc;
use etl_pg::error::EtlError;

/// Whether the connection goes through the MDBTools driver.
pub fn is_mdbtools(connection_string: &str) -> bool {
    let lower = connection_string.to_ascii_lowercase();
    lower.contains("mdbtools") || lower.contains("libmdbodbc")
}

/// The `DBQ=` file of a connection string.
pub fn dbq(connection_string: &str) -> Option<String> {
    connection_string.split(';').find_map(|part| {
        let (k, v) = part.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("dbq")
            .then(|| v.trim().trim_matches(|c| c == '{' || c == '}').to_string())
    })
}

/// The source's user tables (type `TABLE`), names decoded with `encoding`.
pub fn user_tables(
    connection: &Connection<'_>,
    encoding: &'static encoding_rs::Encoding,
) -> Result<Vec<String>, EtlError> {
    // Row by row with SQLGetData: MDBTools refuses row arrays.
    use odbc_api::Cursor;
    let context = "listing the source's tables (SQLTables)";
    let mut statement = connection.preallocate().map_err(odbc(context))?;
    let mut cursor = statement
        .tables_cursor("", "", "", "")
        .map_err(odbc(context))?;
    let mut tables = Vec::new();
    let (mut name, mut kind) = (Vec::new(), Vec::new());
    while let Some(mut row) = cursor.next_row().map_err(odbc(context))? {
        row.get_text(3, &mut name).map_err(odbc(context))?;
        row.get_text(4, &mut kind).map_err(odbc(context))?;
        let name = decode(Some(&name), encoding);
        // SQLite reports its own bookkeeping (sqlite_sequence) as a TABLE.
        if decode(Some(&kind), encoding).eq_ignore_ascii_case("TABLE")
            && !name.starts_with("sqlite_")
        {
            tables.push(name);
        }
    }
    tables.sort();
    tables.dedup();
    Ok(tables)
}

/// Keys through the ODBC catalog functions.
pub fn from_odbc(
    connection: &Connection<'_>,
    tables: &[String],
    encoding: &'static encoding_rs::Encoding,
) -> Result<Catalog, EtlError> {
    let mut catalog = Catalog {
        keys_from: "ODBC catalog functions (SQLPrimaryKeys, SQLForeignKeys)".into(),
        ..Default::default()
    };
    let wanted: BTreeSet<&str> = tables.iter().map(String::as_str).collect();
    for table in tables {
        catalog.keys.entry(table.clone()).or_default().primary_key =
            primary_key(connection, table, encoding)?;
        catalog
            .foreign_keys
            .extend(foreign_keys(connection, table, encoding, &wanted)?);
    }
    Ok(catalog)
}

/// `table`'s primary key columns, in order (SQLPrimaryKeys). Names go out
/// and come back in the source's code page.
fn primary_key(
    connection: &Connection<'_>,
    table: &str,
    encoding: &'static encoding_rs::Encoding,
) -> Result<Vec<String>, EtlError> {
    let context = format!("reading the primary key of {table:?}");
    let rows = odbc::catalog_rows(
        connection,
        "SQLPrimaryKeys",
        &[None, None, Some(table)],
        &[4, 5],
        encoding,
        |statement, a| unsafe {
            // SAFETY: a valid statement; the pointers outlive the call.
            odbc_api::sys::SQLPrimaryKeys(statement, a[0].0, a[0].1, a[1].0, a[1].1, a[2].0, a[2].1)
        },
    )
    .map_err(|e| EtlError::Config(format!("{context}: {e}")))?;
    let mut pk: Vec<(i16, String)> = rows
        .into_iter()
        .map(|r| (key_seq(&r[1]), r[0].clone()))
        .collect();
    pk.sort();
    Ok(pk.into_iter().map(|(_, c)| c).collect())
}

/// The foreign keys of `table`, as the child (SQLForeignKeys), grouped by
/// name; those to a table not `wanted` are left out, saying so.
fn foreign_keys(
    connection: &Connection<'_>,
    table: &str,
    encoding: &'static encoding_rs::Encoding,
    wanted: &BTreeSet<&str>,
) -> Result<Vec<ForeignKey>, EtlError> {
    let context = format!("reading the foreign keys of {table:?}");
    let rows = odbc::catalog_rows(
        connection,
        "SQLForeignKeys",
        &[
            Some(""),
            Some(""),
            Some(""),
            Some(""),
            Some(""),
            Some(table),
        ],
        &[3, 4, 8, 9, 12],
        encoding,
        |statement, a| unsafe {
            // SAFETY: a valid statement; the pointers outlive the call.
            odbc_api::sys::SQLForeignKeys(
                statement, a[0].0, a[0].1, a[1].0, a[1].1, a[2].0, a[2].1, a[3].0, a[3].1, a[4].0,
                a[4].1, a[5].0, a[5].1,
            )
        },
    )
    .map_err(|e| EtlError::Config(format!("{context}: {e}")))?;
    // (parent table, constraint name) -> (position, child column, parent column)
    type Columns = Vec<(i16, String, String)>;
    let mut by_name: BTreeMap<(String, String), Columns> = BTreeMap::new();
    for r in rows {
        let [parent, pk_column, fk_column, seq, name] = &r[..] else {
            unreachable!("five columns asked for")
        };
        by_name
            .entry((parent.clone(), name.clone()))
            .or_default()
            .push((key_seq(seq), fk_column.clone(), pk_column.clone()));
    }
    let mut keys = Vec::new();
    for ((parent, name), mut cols) in by_name {
        if !wanted.contains(parent.as_str()) {
            tracing::warn!(
                table,
                parent,
                "A foreign key refers to a table this run does not load; it is left out."
            );
            continue;
        }
        cols.sort();
        let columns: Vec<String> = cols.iter().map(|c| c.1.clone()).collect();
        let name = if name.is_empty() {
            format!("{table}_{}_fkey", columns.join("_"))
        } else {
            name
        };
        keys.push(ForeignKey {
            name,
            table: table.to_string(),
            columns,
            parent,
            parent_columns: cols.into_iter().map(|c| c.2).collect(),
            on_update: Action::NoAction,
            on_delete: Action::NoAction,
        });
    }
    Ok(keys)
}

/// A KEY_SEQ column's text (1-based position in the key).
fn key_seq(text: &str) -> i16 {
    text.trim().parse().unwrap_or(0)
}

/// Keys of an Access file from `mdb-schema <file> mysql`.
pub fn from_mdb_schema(file: &Path, tables: &[String]) -> Result<Catalog, EtlError> {
    let output = std::process::Command::new("mdb-schema")
        .args(["--no-comments", "--indexes", "--relations"])
        .arg(file)
        .arg("mysql")
        .output()
        .map_err(|e| EtlError::Tool(format!(
            "the MDBTools ODBC driver cannot list keys (its SQLPrimaryKeys and SQLForeignKeys are stubs), so etl reads them with mdb-schema, which failed to start: {e}; install mdbtools (Debian: apt install mdbtools)"
        )))?;
    if !output.status.success() {
        return Err(EtlError::Tool(format!(
            "mdb-schema {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let mut catalog = parse_mdb_schema(&String::from_utf8_lossy(&output.stdout));
    let wanted: BTreeSet<&str> = tables.iter().map(String::as_str).collect();
    catalog.keys.retain(|t, _| wanted.contains(t.as_str()));
    catalog
        .foreign_keys
        .retain(|f| wanted.contains(f.table.as_str()) && wanted.contains(f.parent.as_str()));
    catalog.keys_from = format!(
        "mdb-schema {} (the MDBTools driver's SQLPrimaryKeys and SQLForeignKeys are stubs)",
        file.display()
    );
    Ok(catalog)
}

/// Parses `mdb-schema ... mysql` output: backquoted names as written (Access
/// names cannot hold a backquote), `auto_increment` columns, `ADD PRIMARY
/// KEY`, `ADD [UNIQUE] INDEX` and `FOREIGN KEY ... REFERENCES` lines.
pub fn parse_mdb_schema(text: &str) -> Catalog {
    let mut catalog = Catalog::default();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("CREATE TABLE ") {
            current = quoted(rest).first().cloned();
            if let Some(t) = &current {
                catalog.keys.entry(t.clone()).or_default();
            }
        } else if line.starts_with('`') && line.contains("auto_increment") {
            if let (Some(t), Some(c)) = (&current, quoted(line).first()) {
                catalog
                    .keys
                    .entry(t.clone())
                    .or_default()
                    .identity
                    .push(c.clone());
            }
        } else if let Some(rest) = line.strip_prefix("ALTER TABLE ") {
            let names = quoted(rest);
            let Some(table) = names.first().cloned() else {
                continue;
            };
            let keys = catalog.keys.entry(table.clone()).or_default();
            if rest.contains(" ADD PRIMARY KEY ") {
                keys.primary_key = names[1..].to_vec();
            } else if rest.contains(" ADD UNIQUE INDEX ") || rest.contains(" ADD INDEX ") {
                if names.len() >= 3 {
                    keys.indexes.push(Index {
                        name: names[1].clone(),
                        unique: rest.contains(" ADD UNIQUE INDEX "),
                        columns: names[2..].to_vec(),
                    });
                }
            } else if let Some((before, after)) = rest.split_once(" REFERENCES ") {
                let child = quoted(before);
                let parent = quoted(after);
                // child: table, constraint name, columns...; parent: table, columns...
                if child.len() >= 3 && parent.len() >= 2 {
                    catalog.foreign_keys.push(ForeignKey {
                        name: child[1].clone(),
                        table,
                        columns: child[2..].to_vec(),
                        parent: parent[0].clone(),
                        parent_columns: parent[1..].to_vec(),
                        on_update: Action::NoAction,
                        on_delete: Action::NoAction,
                    });
                }
            }
        }
    }
    catalog
}

/// The backquoted names of a line, in order.
fn quoted(text: &str) -> Vec<String> {
    text.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

fn decode(bytes: Option<&[u8]>, encoding: &'static encoding_rs::Encoding) -> String {
    bytes
        .map(|b| encoding.decode_without_bom_handling(b).0.into_owned())
        .unwrap_or_default()
}

use crate::odbc::odbc_error as odbc;

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = "CREATE TABLE `Order Details`\n (\n\t`OrderID`\t\t\tint, \n\t`ProductID`\t\t\tint not null\n);\n\
ALTER TABLE `Order Details` ADD INDEX `OrderID` (`OrderID`);\n\
ALTER TABLE `Order Details` ADD PRIMARY KEY (`OrderID`, `ProductID`);\n\
CREATE TABLE `Orders`\n (\n\t`OrderID`\t\t\tint not null auto_increment unique, \n\t`ShipVia`\t\t\tint\n);\n\
ALTER TABLE `Orders` ADD PRIMARY KEY (`OrderID`);\n\
CREATE TABLE `Categories`\n (\n\t`CategoryName`\t\t\tvarchar (15)\n);\n\
ALTER TABLE `Categories` ADD UNIQUE INDEX `CategoryName` (`CategoryName`);\n\
ALTER TABLE `Order Details` ADD CONSTRAINT `Order Details_OrderID_fk` FOREIGN KEY (`OrderID`) REFERENCES `Orders`(`OrderID`) ON DELETE CASCADE;\n";

    #[test]
    fn mdb_schema_keys_indexes_and_relations_are_read_with_names_as_written() {
        let c = parse_mdb_schema(SCHEMA);
        let details = &c.keys["Order Details"];
        assert_eq!(details.primary_key, ["OrderID", "ProductID"]);
        assert_eq!(
            details.indexes,
            [Index {
                name: "OrderID".into(),
                unique: false,
                columns: vec!["OrderID".into()]
            }]
        );
        assert_eq!(c.keys["Orders"].identity, ["OrderID"]);
        assert!(c.keys["Categories"].indexes[0].unique);
        assert_eq!(
            c.foreign_keys,
            [ForeignKey {
                name: "Order Details_OrderID_fk".into(),
                table: "Order Details".into(),
                columns: vec!["OrderID".into()],
                parent: "Orders".into(),
                parent_columns: vec!["OrderID".into()],
                on_update: Action::NoAction,
                on_delete: Action::NoAction,
            }]
        );
    }

    #[test]
    fn dbq_is_found_in_a_connection_string() {
        assert_eq!(
            dbq("Driver={MDBTools};DBQ=/data/x y.mdb;").as_deref(),
            Some("/data/x y.mdb")
        );
        assert!(is_mdbtools("Driver={MDBTools};DBQ=a.mdb"));
        assert!(!is_mdbtools("Driver=SQLite3;Database=a.db"));
    }
}
