//! TLS with libpq's conventions against a real server that speaks it (the
//! test server's certificates come from scripts/pg-tmp.sh): a role that
//! may only connect over TLS, each sslmode, a CA that signed nothing, a
//! host name the certificate does not hold, the environment's PGSSL*
//! variables, and a client certificate named by pipeline keys.

use crate::support::{etl_in, psql, tls_dir, Output, TestDb};

/// `url` as role `user`, with `params` added (`?a=b&c=d`).
fn as_user(url: &str, user: &str, params: &str) -> String {
    let url = url.replacen("://etl@", &format!("://{user}@"), 1);
    match params {
        "" => url,
        p => format!("{url}?{p}"),
    }
}

/// A day of rows copied from the source into the target, both reached
/// through `src_url` / `dst_url`, with `sink_keys` added to the sink.
fn pipeline(db: &TestDb, src_url: &str, dst_url: &str, sink_keys: &str) -> String {
    let text = format!(
        r#"name = "tls"
[source]
type = "postgres"
url = "{src_url}"
table = "public.t"
[chunks]
time_column = "at"
interval = "1d"
[[sinks]]
type = "postgres"
url = "{dst_url}"
table = "public.t"
create_table = true
{sink_keys}
"#
    );
    db.pipeline("tls.toml", &text).to_str().unwrap().to_string()
}

/// Runs with HOME in the test's directory (no ~/.postgresql of the
/// machine's) and `env` set.
fn run(db: &TestDb, p: &str, env: &[(&str, &str)]) -> Output {
    let home = db.dir.path().to_str().unwrap().to_string();
    let mut all = vec![("HOME", home.as_str())];
    all.extend_from_slice(env);
    etl_in(db.dir.path(), &["run", "--restart", p], &all)
}

#[test]
fn connections_follow_libpq_sslmodes_and_check_what_they_name() {
    let tls = tls_dir();
    let ca = tls.join("ca.crt").display().to_string();
    let other_ca = tls.join("other-ca.crt").display().to_string();
    // Given a role the server lets in only over TLS, and a day of rows
    let db = TestDb::new("tls_modes");
    psql(
        &db.src,
        "DO $$ BEGIN CREATE ROLE etl_tls LOGIN SUPERUSER; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
         DO $$ BEGIN CREATE ROLE etl_cert LOGIN SUPERUSER; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
         CREATE TABLE t (id int PRIMARY KEY, at timestamptz NOT NULL, s text); \
         INSERT INTO t SELECT i, '2025-06-01'::timestamptz + i * interval '1 hour', '값 ' || i FROM generate_series(0, 9) i",
    );
    let dst_tls = as_user(&db.dst, "etl_tls", "");
    let expect_fail = |out: &Output, text: &str| {
        assert_ne!(out.code, 0, "{out:?}");
        assert!(
            out.stderr.contains(text) || out.stdout.contains(text),
            "{text}\n{out:?}"
        );
    };

    // sslmode=disable: refused by the server, its reason shown
    let p = pipeline(
        &db,
        &as_user(&db.src, "etl_tls", "sslmode=disable"),
        &dst_tls,
        "",
    );
    expect_fail(&run(&db, &p, &[]), "no encryption");

    // No sslmode (prefer, as libpq): over TLS, the rows copied
    let p = pipeline(&db, &as_user(&db.src, "etl_tls", ""), &dst_tls, "");
    let out = run(&db, &p, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        psql(&db.dst, "SELECT count(*) || ' ' || min(s) FROM t"),
        "10 값 0"
    );

    // verify-full against the server's CA, by URL: connects
    let full = format!("sslmode=verify-full&sslrootcert={ca}");
    let p = pipeline(&db, &as_user(&db.src, "etl_tls", &full), &dst_tls, "");
    let out = run(&db, &p, &[]);
    assert_eq!(out.code, 0, "{out:?}");

    // verify-full against a CA that signed nothing of the server's: refused
    let wrong = format!("sslmode=verify-full&sslrootcert={other_ca}");
    let p = pipeline(&db, &as_user(&db.src, "etl_tls", &wrong), &dst_tls, "");
    expect_fail(&run(&db, &p, &[]), "UnknownIssuer");

    // verify-full with no CA named and none in ~/.postgresql: says what to set
    let p = pipeline(
        &db,
        &as_user(&db.src, "etl_tls", "sslmode=verify-full"),
        &dst_tls,
        "",
    );
    expect_fail(&run(&db, &p, &[]), "set sslrootcert=FILE");

    // A host name the certificate does not hold (the address is right):
    // verify-full refuses it, verify-ca (the chain only) lets it in
    let port = db
        .src
        .rsplit_once(':')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap();
    let database = db.src.rsplit_once('/').unwrap().1;
    let by_name = |mode: &str| {
        format!(
            "host=wrong.example hostaddr=127.0.0.1 port={port} dbname={database} user=etl_tls sslmode={mode} sslrootcert={ca}"
        )
    };
    let p = pipeline(&db, &by_name("verify-full"), &dst_tls, "");
    expect_fail(
        &run(&db, &p, &[]),
        "certificate not valid for name \"wrong.example\"",
    );
    let p = pipeline(&db, &by_name("verify-ca"), &dst_tls, "");
    let out = run(&db, &p, &[]);
    assert_eq!(out.code, 0, "{out:?}");

    // The environment as libpq reads it: PGSSLMODE=disable is refused,
    // PGSSLMODE=verify-full with PGSSLROOTCERT connects
    let p = pipeline(&db, &as_user(&db.src, "etl_tls", ""), &dst_tls, "");
    expect_fail(&run(&db, &p, &[("PGSSLMODE", "disable")]), "no encryption");
    let out = run(
        &db,
        &p,
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &ca)],
    );
    assert_eq!(out.code, 0, "{out:?}");

    // A role that needs a client certificate: refused without one, let in
    // with sslcert / sslkey as keys of the sink
    let dst_cert = as_user(&db.dst, "etl_cert", "");
    let p = pipeline(&db, &db.src, &dst_cert, "sslmode = \"require\"");
    expect_fail(&run(&db, &p, &[]), "etl_cert");
    let keys = format!(
        "sslmode = \"verify-full\"\nsslrootcert = \"{ca}\"\nsslcert = \"{}\"\nsslkey = \"{}\"",
        tls.join("client.crt").display(),
        tls.join("client.key").display()
    );
    let p = pipeline(&db, &db.src, &dst_cert, &keys);
    let out = run(&db, &p, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(psql(&db.dst, "SELECT count(*) FROM t"), "10");
}

#[test]
fn a_bad_sslmode_is_named_before_anything_runs() {
    let db = TestDb::new("tls_bad");
    let p = pipeline(
        &db,
        &format!("{}?sslmode=verify", db.src),
        &db.dst,
        "sslmode = \"always\"",
    );
    let out = db.etl(&["validate", &p]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("source.url")
            && out.stderr.contains("sslmode \"verify\" is not one of"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("sinks[0].sslmode")
            && out.stderr.contains("sslmode \"always\" is not one of"),
        "{out:?}"
    );
}

/// Stops a cluster of scripts/pg-tmp.sh when dropped.
struct Cluster(std::path::PathBuf);

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(crate::support::repo().join("scripts/pg-tmp.sh"))
            .arg("stop")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn require_fails_against_a_server_without_tls() {
    // Given a second server started with ssl = off
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let pg = dir.path().join("pg");
    let out = std::process::Command::new(crate::support::repo().join("scripts/pg-tmp.sh"))
        .arg("start")
        .arg(&pg)
        .args(["-c", "ssl=off"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let _stop = Cluster(pg);
    let plain = String::from_utf8(out.stdout).unwrap().trim().to_string();
    psql(
        &plain,
        "CREATE TABLE t (id int PRIMARY KEY, at timestamptz NOT NULL, s text); INSERT INTO t VALUES (1, now(), 'x')",
    );
    let db = TestDb::new("tls_none");

    // When read with sslmode=require: refused, saying the server has no TLS
    let p = pipeline(&db, &format!("{plain}?sslmode=require"), &db.dst, "");
    let out = run(&db, &p, &[]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("server does not support TLS"),
        "{out:?}"
    );

    // And with the default (prefer) the rows come, unencrypted
    let p = pipeline(&db, &plain, &db.dst, "");
    let out = run(&db, &p, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(psql(&db.dst, "SELECT s FROM t"), "x");
}
