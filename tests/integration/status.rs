//! `etl status` for people: per key the rate, ETA and target size,
//! `--watch` redrawing until Ctrl-C, and `--html` writing a page that
//! headless Chromium renders with the grid of chunks.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::support::{psql, repo, TestDb};

/// Pixels of the screenshot whose colour is within a small distance of `hex`.
fn pixels(png_path: &std::path::Path, hex: &str) -> usize {
    let want: Vec<i32> = (0..3)
        .map(|i| i32::from_str_radix(&hex[1 + 2 * i..3 + 2 * i], 16).unwrap())
        .collect();
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("screenshot in {other:?}"),
    };
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| (0..3).all(|i| (p[i] as i32 - want[i]).abs() <= 8))
        .count()
}

#[test]
fn status_shows_pace_and_size_watches_and_draws_the_run_as_a_page_chromium_renders() {
    // Given three ships over four days, a target that rejects the second
    // day, every chunk registered, and two of the ships run
    let db = TestDb::new("status_page");
    db.load_timeseries(3, 2, 4 * 1440);
    psql(
        &db.dst,
        "CREATE SCHEMA tenant; CREATE TABLE tenant.tbl_data_timeseries (ship_id text NOT NULL, data_channel_id text NOT NULL, \
         created_time timestamptz NOT NULL, value_format text NOT NULL, bool_v boolean, str_v text, long_v bigint, \
         double_v double precision, PRIMARY KEY (ship_id, created_time, data_channel_id), \
         CONSTRAINT no_june_2 CHECK (created_time < '2025-06-02' OR created_time >= '2025-06-03'))",
    );
    let p = repo().join("pipelines/ships-copy.toml");
    let p = p.to_str().unwrap();
    assert_eq!(db.etl(&["run", p, "--ddl-only"]).code, 0);
    let run = db.etl(&["run", p, "--key", "IMO9900001", "--key", "IMO9900002"]);
    assert_eq!(run.code, 1, "{run:?}");

    // When status is asked, with the page
    let status = db.etl(&["status", p, "--html", "out/report.html"]);

    // Then each key has its counts, rate and ETA, the pending ship has no
    // pace yet, and the target's size is shown
    assert_eq!(status.code, 0, "{status:?}");
    let line = |key: &str| {
        status
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no line for {key}: {status:?}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        status.stdout.contains("rows/s") && status.stdout.contains("rows/h"),
        "{status:?}"
    );
    let one = line("IMO9900001");
    assert_eq!(
        one[..6],
        ["IMO9900001", "3", "1", "0", "0", "8,640"],
        "{status:?}"
    );
    assert!(
        one[6] != "-" && one[7] != "-",
        "a rate for a key with done chunks: {one:?}"
    );
    assert_eq!(one[8], "0s", "nothing pending for ship 1: {one:?}");
    let three = line("IMO9900003");
    assert_eq!(
        three,
        ["IMO9900003", "0", "0", "4", "0", "0", "-", "-", "-", "-"],
        "{status:?}"
    );
    let all = line("all");
    assert_eq!(
        all[..6],
        ["all", "6", "2", "4", "0", "17,280"],
        "{status:?}"
    );
    assert!(all[8] != "-", "an ETA for the pending chunks: {all:?}");
    assert!(
        status
            .stdout
            .contains("target \"tenant\".\"tbl_data_timeseries\": ")
            && status.stdout.contains(", 3 keys"),
        "{status:?}"
    );

    // And the page is self-contained: nothing to fetch
    let page_path = db.dir.path().join("out/report.html");
    let page = std::fs::read_to_string(&page_path).unwrap();
    for external in ["src=", "href=", "url(", "@import", "<script"] {
        assert!(!page.contains(external), "{external} in the page");
    }
    assert!(
        page.contains("violates check constraint"),
        "the failed chunks' errors"
    );

    // And headless Chromium renders it with the grid: done, failed and pending cells
    let shot = db.dir.path().join("shot.png");
    let chromium = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,1000",
            &format!("--screenshot={}", shot.display()),
            &format!("file://{}", page_path.display()),
        ])
        .output()
        .expect("chromium is installed (scripts/install-deps.sh)");
    assert!(chromium.status.success(), "{chromium:?}");
    use etl::status::html::{DONE, FAILED, PENDING};
    let (done, failed, pending) = (
        pixels(&shot, DONE),
        pixels(&shot, FAILED),
        pixels(&shot, PENDING),
    );
    // 6 done, 2 failed, 4 pending cells of at least 20 x 19 pixels each
    // (legend swatches are 12 x 12).
    assert!(done >= 6 * 20 * 19, "done pixels: {done}");
    assert!(failed >= 2 * 20 * 19, "failed pixels: {failed}");
    assert!(pending >= 4 * 20 * 19, "pending pixels: {pending}");

    // When status --watch runs, it redraws until Ctrl-C, then exits 0
    let mut watch = Command::new(env!("CARGO_BIN_EXE_etl"))
        .args(["status", p, "--watch", "0.5"])
        .current_dir(db.dir.path())
        .env("ETL_SRC_URL", &db.src)
        .env("ETL_DST_URL", &db.dst)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = tx.send(
                all.matches("Pipeline ships-copy, ledger etl.chunk_ledger on")
                    .count(),
            );
        }
    });
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap() < 3 {
        assert!(std::time::Instant::now() < until, "no third redraw");
    }
    Command::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(watch.wait().unwrap().code(), Some(0));
}
