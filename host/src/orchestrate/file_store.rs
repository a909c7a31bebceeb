//! The local checkpoint store: one JSON file per partition under
//! `<dir>/<pipeline>/`, replaced atomically (write, fsync, rename). The
//! compare-and-swap holds a lock file created exclusively, so processes
//! sharing the directory see the same semantics as DynamoDB's conditions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::checkpoint::{Checkpoint, CheckpointError};

/// Checkpoints in a local directory.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
}

/// A lock file older than this is left over from a crash and is broken.
const STALE_LOCK: Duration = Duration::from_secs(30);

impl FileStore {
    /// A store rooted at `dir` (created on first write).
    pub fn new(dir: PathBuf) -> Self {
        FileStore { dir }
    }

    fn fail(&self, error: impl std::fmt::Display) -> CheckpointError {
        CheckpointError::Store {
            store: self.dir.display().to_string(),
            error: error.to_string(),
        }
    }

    fn path(&self, pipeline: &str, partition: &str) -> PathBuf {
        self.dir
            .join(sanitize(pipeline))
            .join(format!("{}.json", sanitize(partition)))
    }

    /// One checkpoint, if stored.
    pub fn get(
        &self,
        pipeline: &str,
        partition: &str,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        read(&self.path(pipeline, partition)).map_err(|e| self.fail(e))
    }

    /// Every checkpoint of a pipeline.
    pub fn list(&self, pipeline: &str) -> Result<Vec<Checkpoint>, CheckpointError> {
        let dir = self.dir.join(sanitize(pipeline));
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.fail(format!("{}: {e}", dir.display()))),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| self.fail(e))?.path();
            if path.extension().is_some_and(|x| x == "json")
                && let Some(c) = read(&path).map_err(|e| self.fail(e))?
            {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Compare-and-swap on the version.
    pub fn swap(&self, next: &Checkpoint) -> Result<bool, CheckpointError> {
        let path = self.path(&next.pipeline, &next.partition);
        let dir = path.parent().expect("has a parent");
        std::fs::create_dir_all(dir).map_err(|e| self.fail(format!("{}: {e}", dir.display())))?;
        let lock = path.with_extension("lock");
        let _guard =
            Lock::take(&lock).map_err(|e| self.fail(format!("{}: {e}", lock.display())))?;
        let stored = read(&path)
            .map_err(|e| self.fail(e))?
            .map_or(0, |c| c.version);
        if stored != next.version {
            return Ok(false);
        }
        let mut written = next.clone();
        written.version += 1;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(&written).expect("serialisable"))?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        result.map_err(|e| self.fail(format!("{}: {e}", path.display())))?;
        Ok(true)
    }
}

fn read(path: &Path) -> Result<Option<Checkpoint>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// An exclusively created lock file, removed on drop.
struct Lock(PathBuf);

impl Lock {
    fn take(path: &Path) -> std::io::Result<Lock> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(_) => return Ok(Lock(path.to_path_buf())),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t.elapsed().unwrap_or_default() > STALE_LOCK);
                    if stale {
                        let _ = std::fs::remove_file(path);
                        continue;
                    }
                    if Instant::now() > deadline {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "lock held for 10 s",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
