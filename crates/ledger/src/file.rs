//! A file sink's ledger. Its chunks need no record of their own: a chunk's
//! file is renamed into place only once it is complete, so a file that
//! exists is a committed chunk. The cutoff of a `--follow` pipeline is a
//! small file beside them, `.etl/<pipeline>.cutoff` under the folder
//! where the sink's path stops being fixed, written to a temporary file,
//! fsynced and renamed, so a crash leaves the old cutoff or the new one.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use etl_base::plan::Chunk;
use etl_model::ledger::{CutoffChange, Entry, Ledger};
use etl_pg::error::EtlError;

/// The ledger of one pipeline in one file sink.
pub struct FileLedger {
    /// `.etl/<pipeline>.cutoff` under the sink's fixed folder.
    cutoff: PathBuf,
}

impl FileLedger {
    /// `template`: the sink's path with its placeholders; `pipeline`: a
    /// name of letters, digits, `-`, `_` and `.` (as validated).
    pub fn new(template: &str, pipeline: &str) -> Self {
        FileLedger {
            cutoff: fixed_folder(template)
                .join(".etl")
                .join(format!("{pipeline}.cutoff")),
        }
    }

    fn io(&self, what: &str) -> impl FnOnce(std::io::Error) -> EtlError {
        let context = format!("{what} {}", self.cutoff.display());
        move |source| EtlError::Io { context, source }
    }

    fn write(&self, cutoff: i64) -> Result<(), EtlError> {
        let dir = self.cutoff.parent().expect("the cutoff file has a folder");
        std::fs::create_dir_all(dir).map_err(self.io("creating the folder of"))?;
        let tmp = self
            .cutoff
            .with_extension(format!("cutoff.{}.tmp", std::process::id()));
        let mut file = std::fs::File::create(&tmp).map_err(self.io("writing"))?;
        writeln!(file, "{cutoff}")
            .and_then(|()| file.sync_all())
            .map_err(self.io("writing"))?;
        std::fs::rename(&tmp, &self.cutoff).map_err(self.io("renaming into place"))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// The folder above the first placeholder of a path template: what every
/// chunk's file is under.
fn fixed_folder(template: &str) -> PathBuf {
    let fixed = &template[..template.find('{').unwrap_or(template.len())];
    let at = fixed.rfind('/').map(|i| i + 1).unwrap_or(0);
    match &fixed[..at] {
        "" => PathBuf::from("."),
        dir => Path::new(dir).to_path_buf(),
    }
}

#[async_trait]
impl Ledger for FileLedger {
    fn name(&self) -> String {
        format!("the files, and {}", self.cutoff.display())
    }

    async fn committed(&self, entries: &[Entry]) -> Result<HashSet<Chunk>, EtlError> {
        Ok(entries
            .iter()
            .filter(|(path, _)| Path::new(path).is_file())
            .map(|(_, chunk)| chunk.clone())
            .collect())
    }

    /// A failed chunk leaves no file; the run's failed-chunk CSV is its
    /// record (`etl rerun` reads it).
    async fn record_failure(
        &self,
        _target: &str,
        _chunk: &Chunk,
        _error: &str,
    ) -> Result<(), EtlError> {
        Ok(())
    }

    async fn cutoff(&self) -> Result<Option<i64>, EtlError> {
        let text = match std::fs::read_to_string(&self.cutoff) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("reading")(e)),
        };
        text.trim().parse().map(Some).map_err(|_| {
            EtlError::Changed(format!(
                "{}: {:?} is not a cutoff (microseconds since 1970); fix it with etl cutoff set, or delete the file to backfill everything again",
                self.cutoff.display(),
                text.trim()
            ))
        })
    }

    /// The cutoff file, and its `.etl` folder once empty; the chunks'
    /// files are the data, and stay.
    async fn forget(&self, apply: bool) -> Result<Vec<String>, EtlError> {
        if !self.cutoff.is_file() {
            return Ok(Vec::new());
        }
        if !apply {
            return Ok(vec![format!("the cutoff file {}", self.cutoff.display())]);
        }
        self.set_cutoff(CutoffChange::Clear).await?;
        if let Some(dir) = self.cutoff.parent() {
            // Only when empty: another pipeline's cutoff may be beside it.
            let _ = std::fs::remove_dir(dir);
        }
        Ok(vec![format!(
            "deleted the cutoff file {}",
            self.cutoff.display()
        )])
    }

    async fn set_cutoff(&self, change: CutoffChange) -> Result<(), EtlError> {
        match change {
            CutoffChange::Forward(c) => match self.cutoff().await? {
                Some(now) if now >= c => Ok(()),
                _ => self.write(c),
            },
            CutoffChange::Exactly(c) => self.write(c),
            CutoffChange::Clear => match std::fs::remove_file(&self.cutoff) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io("removing")(e)),
                _ => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_sits_above_the_first_placeholder() {
        assert_eq!(
            fixed_folder("out/{pipeline}/{key}.parquet"),
            Path::new("out/")
        );
        assert_eq!(fixed_folder("/data/x/{start}.csv"), Path::new("/data/x/"));
        assert_eq!(fixed_folder("{start}.csv"), Path::new("."));
        assert_eq!(fixed_folder("a/b/c.csv"), Path::new("a/b/"));
    }

    #[test]
    fn the_cutoff_persists_moves_forward_only_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let template = format!("{}/{{start}}.parquet", dir.path().display());
        let ledger = FileLedger::new(&template, "p");
        etl_pg::block_on(async {
            assert_eq!(ledger.cutoff().await.unwrap(), None);
            ledger.set_cutoff(CutoffChange::Forward(10)).await.unwrap();
            ledger.set_cutoff(CutoffChange::Forward(5)).await.unwrap();
            // A second ledger on the same folder (the next run) reads it.
            let again = FileLedger::new(&template, "p");
            assert_eq!(again.cutoff().await.unwrap(), Some(10));
            again.set_cutoff(CutoffChange::Exactly(3)).await.unwrap();
            assert_eq!(ledger.cutoff().await.unwrap(), Some(3));
            assert_eq!(
                FileLedger::new(&template, "other").cutoff().await.unwrap(),
                None
            );
            ledger.set_cutoff(CutoffChange::Clear).await.unwrap();
            assert_eq!(ledger.cutoff().await.unwrap(), None);
            ledger.set_cutoff(CutoffChange::Clear).await.unwrap();
        });
        std::fs::write(dir.path().join(".etl/p.cutoff"), "soon\n").unwrap();
        let e = etl_pg::block_on(FileLedger::new(&template, "p").cutoff()).unwrap_err();
        assert!(e.to_string().contains("\"soon\" is not a cutoff"), "{e}");
    }
}
