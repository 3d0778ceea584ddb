//! A rollback file that `etl schema apply` wrote beside its history, read
//! back as a plan: `etl schema rollback` runs it through the same apply
//! machinery (lock and statement timeouts, skips and passes, history) as
//! any plan. Each statement follows its `-- undoes [n] RULE` line, up to
//! the next such line (a function's body holds `;` at line ends, so the
//! marker lines, not the semicolons, part the statements); a `-- [n] RULE:
//! no statement undoes it` line names what cannot be undone.

use super::{Plan, Step};
use crate::diff::Change;
use crate::{Key, Kind, Risk, SchemaError};

/// A rollback file as a plan, and what it cannot undo.
#[derive(Debug)]
pub struct Rollback {
    pub plan: Plan,
    /// `[3] drop-table: no statement undoes it (...)`, one per such step.
    pub irreversible: Vec<String>,
}

impl Rollback {
    /// Reads `text`, the contents of `file` (named in errors).
    pub fn parse(text: &str, file: &str) -> Result<Rollback, SchemaError> {
        let mut blocks: Vec<(usize, String, String)> = Vec::new();
        let mut irreversible = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if let Some(rest) = line.strip_prefix("-- undoes [") {
                let rule = rest
                    .split_once("] ")
                    .filter(|(n, _)| n.parse::<usize>().is_ok())
                    .map(|(n, rule)| format!("[{n}] {rule}"))
                    .ok_or_else(|| bad(file, i + 1, "a `-- undoes [n] RULE` line"))?;
                blocks.push((i + 1, rule, String::new()));
            } else if line.starts_with("-- [") && line.contains(": no statement undoes it") {
                irreversible.push(line.trim_start_matches("-- ").to_string());
            } else if let Some((_, _, sql)) = blocks.last_mut() {
                sql.push_str(line);
                sql.push('\n');
            }
        }
        let mut steps = Vec::new();
        for (line, undoes, sql) in blocks {
            let sql = sql.trim().trim_end_matches(';').trim_end().to_string();
            if sql.is_empty() {
                return Err(bad(file, line, "a statement after `-- undoes`"));
            }
            let n = steps.len() + 1;
            steps.push(step(n, &undoes, sql));
        }
        if steps.is_empty() && irreversible.is_empty() {
            return Err(SchemaError::RollbackFile(format!(
                "{file} holds no `-- undoes [n] RULE` statement: name a rollback file that etl schema apply wrote (history/rollback.*.sql)"
            )));
        }
        Ok(Rollback {
            plan: Plan { steps, pace: None },
            irreversible,
        })
    }
}

fn bad(file: &str, line: usize, wanted: &str) -> SchemaError {
    SchemaError::RollbackFile(format!(
        "{file} line {line}: expected {wanted}; the file is not a rollback file as etl schema apply writes it"
    ))
}

/// The statement undoing `undoes` (`[3] add-column`), graded by what it
/// does: dropping what the apply made loses what was written to it since
/// (high), a type change rewrites (high), the rest medium.
fn step(n: usize, undoes: &str, sql: String) -> Step {
    let upper = sql.to_ascii_uppercase();
    let word = |w: &str| upper.split_whitespace().any(|x| x == w);
    let (risk, reason) = if upper.starts_with("DROP TABLE")
        || upper.starts_with("DROP MATERIALIZED VIEW")
        || upper.contains(" DROP COLUMN ")
    {
        (
            Risk::High,
            "drops what the apply made, with the rows or values written to it since",
        )
    } else if upper.contains(" ALTER COLUMN ") && word("TYPE") {
        (
            Risk::High,
            "changes a column's type back: rewrites the table",
        )
    } else {
        (Risk::Medium, "undoes a statement of the apply")
    };
    let kind = [
        ("INDEX", Kind::Index),
        ("VIEW", Kind::View),
        ("TRIGGER", Kind::Trigger),
        ("FUNCTION", Kind::Function),
        ("PROCEDURE", Kind::Function),
        ("SEQUENCE", Kind::Sequence),
        ("POLICY", Kind::Policy),
        ("EXTENSION", Kind::Extension),
        ("COLLATION", Kind::Collation),
        ("SCHEMA", Kind::Schema),
        ("GRANT", Kind::Grant),
        ("REVOKE", Kind::Grant),
        ("COMMENT", Kind::Comment),
    ]
    .into_iter()
    .find(|(w, _)| word(w))
    .map_or(Kind::Table, |(_, k)| k);
    Step {
        n,
        key: Key::new(kind, &format!("undoes {undoes}")),
        change: Change::Changed,
        transactional: !word("CONCURRENTLY"),
        sql,
        rule: "rollback".into(),
        risk,
        stage: None,
        reasons: vec![format!("undoes {undoes}"), reason.to_string()],
        lock: None,
        tables: Vec::new(),
        fails: None,
        rollback: None,
        cleanup: None,
        after: match n {
            1 => Vec::new(),
            n => vec![n - 1],
        },
        work: Vec::new(),
        estimate_secs: None,
        drop_phase: false,
        needs: Vec::new(),
        check: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_part_at_their_marker_lines_and_what_nothing_undoes_is_named() {
        let text = "-- etl schema apply: make a match b\n-- undoes what ran, newest first\n\
             \n-- undoes [4] create-function\nCREATE OR REPLACE FUNCTION public.f()\n RETURNS int\n LANGUAGE plpgsql\nAS $function$\nBEGIN\n  RETURN 1;\nEND;\n$function$\n;\n\
             \n-- [3] drop-table: no statement undoes it (restore from a --backup): DROP TABLE public.gone\n\
             \n-- undoes [2] add-column\nALTER TABLE public.t DROP COLUMN w;\n\
             \n-- undoes [1] create-index\nDROP INDEX CONCURRENTLY public.i;\n";
        let r = Rollback::parse(text, "rollback.sql").unwrap();
        let steps = &r.plan.steps;
        assert_eq!(steps.len(), 3);
        assert!(
            steps[0].sql.contains("RETURN 1;\nEND;\n$function$"),
            "{}",
            steps[0].sql
        );
        assert_eq!(steps[0].key.kind, Kind::Function);
        assert_eq!(steps[1].sql, "ALTER TABLE public.t DROP COLUMN w");
        assert_eq!(
            (steps[1].risk, steps[1].after.clone()),
            (Risk::High, vec![1])
        );
        assert!(!steps[2].transactional);
        assert_eq!(
            r.irreversible,
            ["[3] drop-table: no statement undoes it (restore from a --backup): DROP TABLE public.gone"]
        );
        let e = Rollback::parse("-- undoes [x] y\nSELECT 1;\n", "r.sql").unwrap_err();
        assert!(e.to_string().contains("r.sql line 1"), "{e}");
        let e = Rollback::parse("-- undoes [1] y\n\n-- undoes [2] z\nSELECT 1;\n", "r.sql")
            .unwrap_err();
        assert!(
            e.to_string().contains("r.sql line 1: expected a statement"),
            "{e}"
        );
    }
}
