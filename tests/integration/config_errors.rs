//! Configuration mistakes: exit code 2 and a message naming the file, line
//! and key, with what to change. And every shipped pipeline validates.

use crate::support::{etl_in, repo};

const DUMMY: [(&str, &str); 4] = [
    ("ETL_SRC_URL", "postgresql://etl@127.0.0.1:1/src"),
    ("ETL_DST_URL", "postgresql://etl@127.0.0.1:1/dst"),
    ("ETL_STAGING", "staging"),
    ("ETL_ACCESS_FILE", "data.mdb"),
];

fn validate(text: &str, env: &[(&str, &str)]) -> crate::support::Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), text).unwrap();
    etl_in(dir.path(), &["validate", "p.toml"], env)
}

const GOOD: &str = r#"name = "t"

[source]
type = "postgres"
url = "${ETL_SRC_URL}"
table = "tenant.tbl_data_timeseries"

[chunks]
time_column = "created_time"
key_column = "ship_id"

[[sinks]]
type = "postgres"
url = "${ETL_DST_URL}"
table = "wide.t_{key}"
"#;

#[test]
fn every_shipped_pipeline_validates() {
    let mut seen = 0;
    for entry in std::fs::read_dir(repo().join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = etl_in(&repo(), &["validate", path.to_str().unwrap()], &DUMMY);
            assert_eq!(out.code, 0, "{}: {out:?}", path.display());
            assert!(out.stdout.contains("is valid"), "{out:?}");
            seen += 1;
        }
    }
    assert!(seen > 0, "no pipelines/*.toml found");
}

#[test]
fn good_file_is_valid() {
    let out = validate(GOOD, &DUMMY);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "p.toml: pipeline \"t\" is valid (1 sink)\n");
}

#[test]
fn all_value_problems_are_reported_at_once_with_lines() {
    // Given three bad values
    let text = GOOD
        .replace("key_column = \"ship_id\"", "key_column = \"ship_id\"\ninterval = \"1.5h\"\nstart = \"2025-06-08\"\nend = \"2025-06-01\"")
        .replace("table = \"tenant.tbl_data_timeseries\"", "table = \"tenant.tbl_data_timeseries\"\nquery = \"SELECT 1\"");
    // When validated
    let out = validate(&text, &DUMMY);
    // Then each is named with its line and key, and the exit code is 2
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        out.stderr,
        "etl: p.toml: 3 problems:\n\
         \x20 line 7, source.query: give either `query` or `table`, not both\n\
         \x20 line 12, chunks.interval: \"1.5h\" is not an interval; use a whole number of s, m, h or d, like \"24h\"\n\
         \x20 line 14, chunks.end: \"2025-06-01\" is not after start \"2025-06-08\"\n"
    );
}

#[test]
fn unknown_key_names_line_and_the_valid_keys() {
    let out = validate(&GOOD.replace("key_column", "key_colum"), &DUMMY);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .starts_with("etl: p.toml: TOML parse error at line 10, column 1\n"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(
            "unknown field `key_colum`, expected one of `time_column`, `interval`, `key_column`"
        ),
        "{out:?}"
    );
}

#[test]
fn unknown_sink_type_lists_the_types() {
    let out = validate(
        &GOOD.replace(
            "type = \"postgres\"\nurl = \"${ETL_DST_URL}\"",
            "type = \"postgress\"\nurl = \"${ETL_DST_URL}\"",
        ),
        &DUMMY,
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("line 13"), "{out:?}");
    assert!(
        out.stderr
            .contains("unknown variant `postgress`, expected one of `postgres`, `parquet`, `csv`"),
        "{out:?}"
    );
}

#[test]
fn missing_environment_variable_is_named() {
    let out = validate(GOOD, &[("ETL_SRC_URL", "postgresql://etl@127.0.0.1:1/src")]);
    assert_eq!(out.code, 2, "{out:?}");
    // The line is the [[sinks]] table's: serde reads tagged tables whole.
    assert!(
        out.stderr
            .starts_with("etl: p.toml: TOML parse error at line 12, column 1\n"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("environment variable ETL_DST_URL is not set (used as ${ETL_DST_URL}); export it or write the value"),
        "{out:?}"
    );
}

#[test]
fn wrong_type_names_the_key() {
    let out = validate(
        &GOOD.replace(
            "key_column = \"ship_id\"",
            "key_column = \"ship_id\"\nworkers = \"two\"",
        ),
        &DUMMY,
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("line 11"), "{out:?}");
    assert!(
        out.stderr
            .contains("invalid type: string \"two\", expected usize"),
        "{out:?}"
    );
}

#[test]
fn missing_file_is_named() {
    let out = etl_in(&repo(), &["validate", "no/such.toml"], &[]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        "etl: cannot read pipeline file no/such.toml: No such file or directory (os error 2)\n"
    );
}

#[test]
fn bad_url_is_a_problem_of_its_key() {
    let out = validate(
        GOOD,
        &[
            ("ETL_SRC_URL", "postgresql://etl@127.0.0.1:notaport/src"),
            DUMMY[1],
        ],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("line 5, source.url: is not a PostgreSQL URL ("),
        "{out:?}"
    );
}

#[test]
fn pivot_settings_are_checked_with_their_lines() {
    // Given two pivots, the first with no index and too many columns, and
    // a primary key other than the index
    let text = GOOD.replace(
        "[[sinks]]",
        "[[transforms]]\ntype = \"pivot\"\nindex = []\nname_column = \"data_channel_id\"\nformat_column = \"value_format\"\n\
         values = { Decimal = \"double_v\" }\nmax_columns = 1700\n\n\
         [[transforms]]\ntype = \"pivot\"\nindex = [\"t\"]\nname_column = \"n\"\nformat_column = \"f\"\nvalues = { D = \"d\" }\n\n\
         [[sinks]]\ntype = \"parquet\"\npath = \"s/{key}/{start}.parquet\"\n\n[[sinks]]",
    ) + "primary_key = [\"ship_id\"]\n";
    // When validated
    let out = validate(&text, &DUMMY);
    // Then each problem is named with its line
    assert_eq!(out.code, 2, "{out:?}");
    for expected in [
        "line 21, transforms[1].type: a pipeline pivots once",
        "line 14, transforms[0].index: must list the wide table's key columns",
        "line 18, transforms[0].max_columns: 1700 is out of range; use 1 to 1600",
        "line 35, sinks[1].primary_key: a pivot's tables are keyed by the pivot's index; leave primary_key out",
    ] {
        assert!(out.stderr.contains(expected), "{expected}\n{out:?}");
    }
}

#[test]
fn a_bad_column_groups_file_names_its_line() {
    // Given a column_groups file with a line of three fields
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("groups.csv"),
        "channel,group\nch_1,engine\nch_2,engine,extra\n",
    )
    .unwrap();
    let text = GOOD.replace(
        "[[sinks]]",
        "[[transforms]]\ntype = \"pivot\"\nindex = [\"created_time\"]\nname_column = \"data_channel_id\"\nformat_column = \"value_format\"\n\
         values = { Decimal = \"double_v\" }\ncolumn_groups = \"groups.csv\"\n\n[[sinks]]",
    );
    std::fs::write(dir.path().join("p.toml"), text).unwrap();
    let db = crate::support::TestDb::new("config_column_groups");
    db.load_timeseries(1, 1, 10);
    // When the run starts
    let out = etl_in(
        dir.path(),
        &["run", "p.toml"],
        &[("ETL_SRC_URL", &db.src), ("ETL_DST_URL", &db.dst)],
    );
    // Then it stops before any chunk, naming the file and line
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("column_groups file groups.csv, line 3: expected two non-empty fields"),
        "{out:?}"
    );
}

const WHOLE: &str = r#"name = "w"

[source]
type = "postgres"
url = "${ETL_SRC_URL}"
tables = ["*"]

[[sinks]]
type = "postgres"
url = "${ETL_DST_URL}"
table = "{schema}.{table}"
create_table = true
"#;

#[test]
fn whole_postgres_database_settings_are_checked_with_their_lines() {
    assert_eq!(validate(WHOLE, &DUMMY).code, 0);
    // Given a whole database with a table and a pattern that is not one,
    // a renamed target, upsert, and fk_handling where tables are created
    let text = WHOLE
        .replace(
            "tables = [\"*\"]",
            "tables = [\"*\"]\ntable = \"a.b\"\nexclude = [\"[x\"]",
        )
        .replace(
            "table = \"{schema}.{table}\"",
            "table = \"copy.{table}\"\nmode = \"upsert\"\nfk_handling = \"order\"",
        );
    // When validated
    let out = validate(&text, &DUMMY);
    // Then each is named with its line and key
    assert_eq!(out.code, 2, "{out:?}");
    for want in [
        "line 6, source.tables: give `tables` / `schemas` (a whole database) or `table` / `query` (one relation), not both",
        "line 8, source.exclude: \"[x\" is not a glob pattern",
        "line 13, sinks[0].table: a whole PostgreSQL database keeps its schemas and table names",
        "line 14, sinks[0].mode: a whole PostgreSQL database loads each table (or range of its key) once",
        "line 15, sinks[0].fk_handling: applies to a migration (a whole database, an Access file, ODBC tables, or CSV files with {file}) loaded into tables that exist",
    ] {
        assert!(out.stderr.contains(want), "{want}: {out:?}");
    }
    // And the settings of a whole database are refused on one table
    let one = WHOLE
        .replace("tables = [\"*\"]", "table = \"a.b\"\nexclude = [\"x\"]")
        .replace("[[sinks]]", "[chunks]\ntime_column = \"t\"\n\n[[sinks]]");
    let out = validate(&one, &DUMMY);
    assert!(
        out.stderr
            .contains("line 7, source.exclude: applies to a whole database"),
        "{out:?}"
    );
}

/// Shell completions and the manual page come from the command line's own
/// definitions, so they name every command (a new one included) and
/// parse in their shell.
#[test]
fn completions_and_the_man_page_name_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| crate::support::etl_in(dir.path(), args, &[]);
    let commands = [
        "run", "plan", "verify", "rerun", "forget", "cutoff", "schema", "db",
    ];
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert_eq!(out.code, 0, "{shell}: {out:?}");
        for c in commands {
            assert!(out.stdout.contains(c), "{shell} lacks {c}");
        }
    }
    let bash = dir.path().join("etl.bash");
    std::fs::write(&bash, run(&["completions", "bash"]).stdout).unwrap();
    let parsed = std::process::Command::new("bash")
        .arg("-n")
        .arg(&bash)
        .status()
        .unwrap();
    assert!(parsed.success(), "the bash completion does not parse");
    let man = run(&["man"]);
    assert_eq!(man.code, 0, "{man:?}");
    assert!(man.stdout.contains(".TH etl 1"), "{man:?}");
    for c in commands {
        assert!(
            man.stdout.contains(&format!("etl\\-{c}(1)")),
            "the man page lacks {c}"
        );
    }
}
