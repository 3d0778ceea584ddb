//! Where log lines go: the terminal (readable lines, drawn around the
//! progress bars so a redraw never cuts a line), and with `--log-file` a
//! file rotated by size, as text or JSON lines.
//!
//! Rotation by size is written here: tracing-appender rotates by time only
//! (minutely, hourly, daily), and the runbooks etl replaces cap log size.
//! `etl.log` is the current file; when a line would take it past the
//! limit it becomes `etl.log.1`, the older ones shift up, and files past
//! `--log-keep` are deleted.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use etl_run::summary::bars;

/// Log lines as JSON objects, or readable text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Logging as the command line asks.
#[derive(Debug, Clone)]
pub struct Options {
    pub verbose: u8,
    pub quiet: bool,
    pub file: Option<PathBuf>,
    pub max_size: u64,
    pub keep: usize,
    pub format: Format,
}

/// `10MB`, `512kB`, `1GiB`, `2048` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write it like 10MB, 512kB or 1GiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unit {other:?} of {text:?} is not one of B, kB, MB, GB, KiB, MiB, GiB"
            ))
        }
    };
    let bytes = (n * factor as f64) as u64;
    if bytes < 1024 {
        return Err(format!(
            "{text:?} is under 1 kB; a log file needs room for its lines"
        ));
    }
    Ok(bytes)
}

fn filter(verbose: u8, quiet: bool) -> EnvFilter {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("etl={level},warn")))
}

/// Installs the subscriber: terminal lines (JSON without a log file when
/// `--log-format json`), and the log file when asked. `--quiet` quiets the
/// terminal only; the file keeps info lines.
pub fn init(o: &Options) -> io::Result<()> {
    let ansi = io::IsTerminal::is_terminal(&io::stderr());
    let terminal_json = o.format == Format::Json && o.file.is_none();
    let terminal = tracing_subscriber::fmt::layer()
        .with_writer(|| Terminal)
        .with_target(false)
        .with_ansi(ansi && !terminal_json);
    let terminal = if terminal_json {
        terminal
            .json()
            .with_filter(filter(o.verbose, o.quiet))
            .boxed()
    } else {
        terminal.with_filter(filter(o.verbose, o.quiet)).boxed()
    };
    let file = match &o.file {
        None => None,
        Some(path) => {
            let rotating = Rotating::open(path, o.max_size, o.keep)?;
            let writer = std::sync::Arc::new(rotating);
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(move || RotatingWriter(writer.clone()))
                .with_ansi(false)
                .with_target(false);
            Some(match o.format {
                Format::Json => layer.json().with_filter(filter(o.verbose, false)).boxed(),
                Format::Text => layer.with_filter(filter(o.verbose, false)).boxed(),
            })
        }
    };
    tracing_subscriber::registry()
        .with(terminal)
        .with(file)
        .init();
    Ok(())
}

/// stderr, with the progress bars cleared while a line is written and
/// drawn again after it.
struct Terminal;

impl Write for Terminal {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        bars().suspend(|| io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// The log file and its rotation state.
pub struct Rotating {
    path: PathBuf,
    max_size: u64,
    keep: usize,
    state: Mutex<(File, u64)>,
}

impl Rotating {
    pub fn open(path: &Path, max_size: u64, keep: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open log file {}: {e}", path.display()),
                )
            })?;
        let size = file.metadata()?.len();
        Ok(Rotating {
            path: path.to_path_buf(),
            max_size,
            keep,
            state: Mutex::new((file, size)),
        })
    }

    fn numbered(&self, n: usize) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    /// Writes one whole line, rotating first when it would not fit.
    pub fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.1 > 0 && state.1 + line.len() as u64 > self.max_size {
            state.0.flush()?;
            // etl.log.(keep) is dropped; the others move up by one.
            if self.keep == 0 {
                let _ = std::fs::remove_file(&self.path);
            } else {
                let _ = std::fs::remove_file(self.numbered(self.keep));
                for n in (1..self.keep).rev() {
                    let from = self.numbered(n);
                    if from.exists() {
                        std::fs::rename(&from, self.numbered(n + 1))?;
                    }
                }
                std::fs::rename(&self.path, self.numbered(1))?;
            }
            state.0 = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            state.1 = 0;
        }
        state.0.write_all(line)?;
        state.1 += line.len() as u64;
        Ok(())
    }
}

/// One event's writer: tracing-subscriber formats an event whole and
/// writes it in one call, which is the unit of rotation.
struct RotatingWriter(std::sync::Arc<Rotating>);

impl Write for RotatingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_line(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_their_units() {
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("512kB"), Ok(512_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("12").is_err());
    }

    #[test]
    fn rotation_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/etl.log");
        let r = Rotating::open(&path, 1024, 2).unwrap();
        for i in 0..100 {
            r.write_line(format!("{i:0>99}\n").as_bytes()).unwrap();
        }
        let size = |p: PathBuf| std::fs::metadata(p).unwrap().len();
        assert!(size(path.clone()) <= 1024);
        assert_eq!(size(r.numbered(1)), 1000);
        assert_eq!(size(r.numbered(2)), 1000);
        assert!(!r.numbered(3).exists());
        // The newest line is in the current file, the one before in .1.
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.ends_with(&format!("{:0>99}\n", 99)));
        let older = std::fs::read_to_string(r.numbered(1)).unwrap();
        assert!(older.ends_with(&format!("{:0>99}\n", 89)));
    }
}
