//! scripts/fixtures.sh, which scripts/test.sh runs first: on a fresh clone
//! with nothing beside it, the third-party samples come from their own
//! repositories at pinned commits, checked by sha256, into a cache outside
//! the clone; without a network, or with a file that differs, it stops
//! in one line saying what to set. The samples' repositories are served
//! here by a mirror on loopback (only loopback is reachable), laid out as
//! raw.githubusercontent.com lays them out.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::repo;

/// `(name in the folder, path under the source, sha256)` as the script pins them.
fn pinned() -> Vec<(String, String, String)> {
    let script = std::fs::read_to_string(repo().join("scripts/fixtures.sh")).unwrap();
    let files: Vec<(String, String, String)> = script
        .lines()
        .map(|l| l.trim_start_matches("FILES=\""))
        .filter_map(|l| {
            let f: Vec<&str> = l.trim_end_matches('"').split_whitespace().collect();
            (f.len() == 3 && f[2].len() == 64 && f[2].bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
        })
        .collect();
    assert_eq!(files.len(), 3, "{files:?}");
    files
}

fn run(env: &[(&str, &Path)], source: &str) -> Output {
    let mut cmd = Command::new(repo().join("scripts/fixtures.sh"));
    cmd.env_remove("ETL_FIXTURES")
        .env("ETL_FIXTURES_SOURCE", source)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A static file server on loopback, stopped when dropped.
struct Mirror(std::process::Child, String);

impl Mirror {
    fn serve(dir: &Path) -> Mirror {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is installed");
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Mirror(child, url);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the mirror on {url} did not start");
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_fresh_clone_fetches_the_samples_pinned_by_sha256_or_stops_saying_what_to_set() {
    // Given the samples' repositories on a mirror, and no shared folder
    let shared = crate::odbc::fixtures();
    let dir = tempfile::tempdir().unwrap();
    let mirror_dir = dir.path().join("mirror");
    for (name, path, _) in pinned() {
        let to = mirror_dir.join(&path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(shared.join(&name), to).unwrap();
    }
    let mirror = Mirror::serve(&mirror_dir);
    let nowhere = dir.path().join("no-shared");
    let cache = dir.path().join("cache");
    let env = [
        ("ETL_FIXTURES_SHARED", nowhere.as_path()),
        ("ETL_FIXTURES_CACHE", cache.as_path()),
    ];

    // When the script runs
    let fetched = run(&env, &mirror.1);

    // Then every file is in the cache, equal to the shared one, and the
    // script prints the cache's folder
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    assert_eq!(
        String::from_utf8_lossy(&fetched.stdout).trim(),
        cache.display().to_string()
    );
    for (name, _, _) in pinned() {
        assert_eq!(
            std::fs::read(cache.join(&name)).unwrap(),
            std::fs::read(shared.join(&name)).unwrap(),
            "{name}"
        );
    }

    // And with the mirror gone, the cache serves a second run
    drop(mirror);
    let again = run(&env, "http://127.0.0.1:1");
    assert!(again.status.success(), "{}", stderr(&again));

    // When there is no network and no cache: one line says what to set
    let empty = dir.path().join("empty-cache");
    let offline = run(
        &[
            ("ETL_FIXTURES_SHARED", nowhere.as_path()),
            ("ETL_FIXTURES_CACHE", empty.as_path()),
        ],
        "http://127.0.0.1:1",
    );
    assert_eq!(offline.status.code(), Some(1));
    let said = stderr(&offline);
    let last = said.lines().last().unwrap();
    assert!(
        last.starts_with("fixtures.sh: cannot fetch http://127.0.0.1:1/")
            && last.contains("set ETL_FIXTURES to a folder holding the shared samples"),
        "{said}"
    );
    assert_eq!(said.lines().count(), 2, "a notice and the reason: {said}");

    // When a served file differs from its pinned sum: nothing is used
    let (name, path, _) = pinned().remove(2);
    let tampered = mirror_dir.join(&path);
    let mut bytes = std::fs::read(&tampered).unwrap();
    bytes.push(b'!');
    std::fs::write(&tampered, bytes).unwrap();
    let mirror = Mirror::serve(&mirror_dir);
    let fresh = dir.path().join("fresh-cache");
    let differs = run(
        &[
            ("ETL_FIXTURES_SHARED", nowhere.as_path()),
            ("ETL_FIXTURES_CACHE", fresh.as_path()),
        ],
        &mirror.1,
    );
    assert_eq!(differs.status.code(), Some(1));
    assert!(
        stderr(&differs).contains("not the pinned") && !fresh.join(&name).exists(),
        "{}",
        stderr(&differs)
    );

    // And ETL_FIXTURES naming a folder without them is refused
    let wrong: PathBuf = dir.path().join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    let mut cmd = Command::new(repo().join("scripts/fixtures.sh"));
    let refused = cmd.env("ETL_FIXTURES", &wrong).output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("lacks a sample file or holds one that differs"),
        "{}",
        stderr(&refused)
    );
}
