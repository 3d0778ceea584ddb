//! Test support: a real PostgreSQL server (one per test process), a pair of
//! databases per test, and a way to run the `etl` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

mod korean;
pub use korean::{cp949, korean_text};

/// The server's base URL, without a database: `postgresql://etl@127.0.0.1:PORT`.
fn server() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("ETL_TEST_PG_URL") {
            return url
                .rsplit_once('/')
                .map(|(base, _)| base.to_string())
                .unwrap_or(url);
        }
        start_server()
    })
}

/// Starts a throwaway cluster with scripts/pg-tmp.sh and a watchdog that
/// stops it when this test process exits.
fn start_server() -> String {
    let (dir, url) = start_cluster("etl-test-pg", &[]);
    let script = repo().join("scripts/pg-tmp.sh");
    let pg_dir = dir.join("pg");
    let _ = STARTED_TLS.set(pg_dir.join("tls"));
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; '{script}' stop '{pg}'; rm -rf '{dir}'",
        pid = std::process::id(),
        script = script.display(),
        pg = pg_dir.display(),
        dir = dir.display()
    );
    // Detached on purpose: it outlives this process to stop the server.
    #[allow(clippy::zombie_processes)]
    Command::new("setsid")
        .args(["sh", "-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server watchdog");
    url.rsplit_once('/')
        .map(|(base, _)| base.to_string())
        .expect("url has a database")
}

/// A cluster started by scripts/pg-tmp.sh in `DIR/pg` (DIR a new temp
/// directory named `prefix...`), tuned for tests, with `options` (`name=value`)
/// after: DIR and the server's URL.
fn start_cluster(prefix: &str, options: &[&str]) -> (PathBuf, String) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
        .keep();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod temp dir");
    let mut args = vec!["start".to_string(), dir.join("pg").display().to_string()];
    for o in [
        "fsync=off",
        "synchronous_commit=off",
        "full_page_writes=off",
    ]
    .into_iter()
    .chain(options.iter().copied())
    {
        args.push("-c".into());
        args.push(o.into());
    }
    let out = Command::new(repo().join("scripts/pg-tmp.sh"))
        .args(&args)
        .output()
        .expect("run scripts/pg-tmp.sh");
    assert!(
        out.status.success(),
        "could not start a test PostgreSQL (install it with scripts/install-deps.sh, or set ETL_TEST_PG_URL):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout)
        .expect("utf-8 url")
        .trim()
        .to_string();
    (dir, url)
}

/// The certificates of a server this process started.
static STARTED_TLS: OnceLock<PathBuf> = OnceLock::new();

/// The test server's certificates (scripts/pg-tmp.sh makes them in
/// DIR/tls): `ETL_TEST_PG_TLS` beside `ETL_TEST_PG_URL`, or those of the
/// server started here.
pub fn tls_dir() -> PathBuf {
    server();
    if let Some(dir) = STARTED_TLS.get() {
        return dir.clone();
    }
    let dir = std::env::var_os("ETL_TEST_PG_TLS").map(PathBuf::from).expect(
        "ETL_TEST_PG_URL is set without ETL_TEST_PG_TLS: set it to the server's tls directory (scripts/pg-tmp.sh makes DIR/tls)",
    );
    assert!(
        dir.join("ca.crt").is_file(),
        "ETL_TEST_PG_TLS={} holds no ca.crt",
        dir.display()
    );
    dir
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs SQL through psql; panics with psql's message on error.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-Atq", url])
        .arg("-c")
        .arg(sql)
        .output()
        .expect("psql is installed");
    assert!(
        out.status.success(),
        "psql failed on {sql}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim_end()
        .to_string()
}

/// Runs a SQL file through psql with variables.
pub fn psql_file(url: &str, file: &Path, vars: &[(&str, &str)]) {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-q", url, "-f"])
        .arg(file);
    for (k, v) in vars {
        cmd.arg("-v").arg(format!("{k}={v}"));
    }
    let out = cmd.output().expect("psql is installed");
    assert!(
        out.status.success(),
        "psql -f {} failed:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A source and a target database for one test, and a directory for its files.
pub struct TestDb {
    pub src: String,
    pub dst: String,
    pub dir: tempfile::TempDir,
}

impl TestDb {
    pub fn new(name: &str) -> TestDb {
        let admin = format!("{}/postgres", server());
        for db in ["src", "dst"] {
            psql(
                &admin,
                &format!("DROP DATABASE IF EXISTS {name}_{db} WITH (FORCE)"),
            );
            psql(&admin, &format!("CREATE DATABASE {name}_{db}"));
        }
        TestDb {
            src: format!("{}/{name}_src", server()),
            dst: format!("{}/{name}_dst", server()),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Loads the generated EAV time series into the source.
    pub fn load_timeseries(&self, ships: u32, channels: u32, minutes: u32) {
        psql_file(
            &self.src,
            &repo().join("fixtures/sql/timeseries.sql"),
            &[
                ("ships", &ships.to_string()),
                ("channels", &channels.to_string()),
                ("minutes", &minutes.to_string()),
            ],
        );
    }

    /// Writes a pipeline file into the test's directory.
    pub fn pipeline(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write pipeline");
        path
    }

    /// Runs etl with this test's directory as working directory and
    /// ETL_SRC_URL / ETL_DST_URL set.
    pub fn etl(&self, args: &[&str]) -> Output {
        etl_in(
            self.dir.path(),
            args,
            &[("ETL_SRC_URL", &self.src), ("ETL_DST_URL", &self.dst)],
        )
    }
}

impl TestDb {
    /// [`TestDb::etl`] with `input` typed on its stdin.
    pub fn etl_typing(&self, args: &[&str], input: &str) -> Output {
        etl_typed(
            self.dir.path(),
            args,
            &[("ETL_SRC_URL", &self.src), ("ETL_DST_URL", &self.dst)],
            input,
        )
    }
}

/// What a run of the binary did.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The first line of stdout that starts with `prefix`; the test fails
    /// showing the whole output when there is none.
    pub fn line(&self, prefix: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?}: {self:?}"))
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub fn etl_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    etl_typed(dir, args, env, "")
}

/// Runs etl with `input` on its stdin (closed after it): what a person types.
pub fn etl_typed(dir: &Path, args: &[&str], env: &[(&str, &str)], input: &str) -> Output {
    etl_built(Path::new(env!("CARGO_BIN_EXE_etl")), dir, args, env, input)
}

/// [`etl_typed`] for a given build of etl.
pub fn etl_built(
    bin: &Path,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    input: &str,
) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(bin);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("PGPASSWORD");
    for tls in ["PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"] {
        cmd.env_remove(tls);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run etl");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // etl may exit without reading: a closed pipe is not an error here.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let out = child.wait_with_output().expect("run etl");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Row count and an md5 over the rows in a stable order, for exact comparisons.
pub fn fingerprint(url: &str, table: &str, order_by: &str) -> String {
    psql(url, &format!("SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, '|' ORDER BY {order_by})), '-') FROM {table} t"))
}

/// Starts etl in the test's directory with the test's URLs and `env`;
/// its stderr lines arrive on the receiver as they are written.
pub fn spawn_etl(
    db: &TestDb,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_etl"));
    cmd.current_dir(db.dir.path())
        .args(args)
        .env("ETL_SRC_URL", &db.src)
        .env("ETL_DST_URL", &db.dst)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start etl");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits for a stderr line starting with `prefix`; panics after two minutes.
pub fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, prefix: &str) -> Vec<String> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut seen = Vec::new();
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.starts_with(prefix);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!(
                "no line starting with {prefix:?}; saw:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// A psql session that holds a lock on `table` until it is killed; its
/// application name shows in etl's error.
pub fn hold_lock(url: &str, application: &str, table: &str, mode: &str) -> std::process::Child {
    let (holder, said) = hold_open(
        url,
        application,
        &format!("BEGIN; LOCK TABLE {table} IN {mode} MODE; SELECT 'locked';"),
    );
    assert_eq!(said, "locked");
    holder
}

/// A psql session named `application` that runs `sql` (which leaves a
/// transaction open) and stays until it is killed; returns it and the
/// first line `sql` printed, once printed.
pub fn hold_open(url: &str, application: &str, sql: &str) -> (std::process::Child, String) {
    use std::io::{BufRead, Write};
    let mut holder = Command::new("psql")
        .args(["-X", "-q", "-A", "-t", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("psql is installed");
    writeln!(
        holder.stdin.as_mut().expect("stdin is piped"),
        "SET application_name = '{application}'; {sql}"
    )
    .expect("psql takes input");
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.as_mut().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("psql answers");
    (holder, line.trim().to_string())
}

/// The fleet table in the target equals the one in the source, row for row.
pub fn assert_copied(db: &TestDb) {
    let order = "ship_id, created_time, data_channel_id";
    assert_eq!(
        fingerprint(&db.dst, "tenant.tbl_data_timeseries", order),
        fingerprint(&db.src, "tenant.tbl_data_timeseries", order),
        "target differs from source"
    );
}

/// Runs `sql` in the SQLite database `file` with the `sqlite3` CLI; its
/// output, trimmed. It waits up to 30 s for a lock an etl reader still
/// holds (a reader process may be closing its cursor when a test writes).
pub fn sqlite(file: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .args(["-cmd", ".timeout 30000"])
        .arg(file)
        .arg(sql)
        .output()
        .expect("sqlite3 is installed (scripts/install-deps.sh)");
    assert!(out.status.success(), "sqlite3 {}: {out:?}", file.display());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A server of one test's own, started with `options` (`-c name=value`,
/// such as a small `max_connections`) by scripts/pg-tmp.sh, and stopped
/// when dropped.
pub struct OwnServer {
    /// `postgresql://etl@127.0.0.1:PORT`, without a database.
    pub base: String,
    dir: PathBuf,
}

impl OwnServer {
    pub fn start(options: &[&str]) -> OwnServer {
        let (parent, url) = start_cluster("etl-own-pg", options);
        OwnServer {
            base: url.rsplit_once('/').unwrap().0.to_string(),
            dir: parent.join("pg"),
        }
    }

    /// A source and a target database on this server.
    pub fn test_db(&self, name: &str) -> TestDb {
        let admin = format!("{}/postgres", self.base);
        for db in ["src", "dst"] {
            psql(&admin, &format!("CREATE DATABASE {name}_{db}"));
        }
        TestDb {
            src: format!("{}/{name}_src", self.base),
            dst: format!("{}/{name}_dst", self.base),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
}

impl OwnServer {
    /// Stops the server at once, as a crash would, and starts it again on
    /// the same port with the same options.
    pub fn restart(&self) {
        let out = Command::new(repo().join("scripts/pg-tmp.sh"))
            .arg("restart")
            .arg(&self.dir)
            .output()
            .expect("scripts/pg-tmp.sh runs");
        assert!(out.status.success(), "restarting the server: {out:?}");
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/pg-tmp.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

/// Waits until `check` holds, or panics after a minute.
pub fn eventually(what: &str, check: impl Fn() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !check() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Ctrl-C to a spawned etl ([`spawn_etl`]): its exit code and what it
/// printed.
pub fn stop(child: &mut std::process::Child) -> (Option<i32>, String) {
    stop_with(child, "INT")
}

/// [`stop`] by another signal (`TERM`: a service manager's stop).
pub fn stop_with(child: &mut std::process::Child, signal: &str) -> (Option<i32>, String) {
    std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    (status.code(), stdout)
}

/// Sequential scans of `table` on the source so far, once every other
/// session of its database has ended (a session's counts reach the
/// statistics when it ends).
pub fn seq_scans(url: &str, table: &str) -> i64 {
    for _ in 0..200 {
        let others = psql(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        );
        if others == "0" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    psql(
        url,
        &format!("SELECT seq_scan FROM pg_stat_user_tables WHERE relid = '{table}'::regclass"),
    )
    .parse()
    .unwrap()
}
