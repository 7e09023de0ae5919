//! Advisory file locks (flock) so two contracam processes sharing a data dir never write the same
//! download, extraction or index at once. The second one waits, then finds the work done.
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::data::error::{IoContext, Result};

/// Held until dropped (closing the file releases the lock, also when the process dies). Dropping it
/// removes the lock file, so no empty `.lock` files stay behind.
#[derive(Debug)]
pub struct Lock {
    file: Option<File>,
    pub path: PathBuf,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Unlinked while still held: a process waiting on this inode then sees the path no longer names
        // it (checked in `acquire`) and locks a fresh file, so two holders can never coexist.
        let _ = std::fs::remove_file(&self.path);
        drop(self.file.take());
    }
}

/// Does `path` still name the file open as `file`? Not when a previous holder removed it meanwhile.
fn still_linked(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Lock `path` (created if missing), waiting for another holder. `what` says what is being protected,
/// for the message printed while waiting.
pub fn acquire(path: &Path, what: &str, quiet: bool) -> Result<Lock> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).at(p)?;
    }
    let mut told = false;
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .at(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                if !quiet && !told {
                    eprintln!(
                        "waiting for another contracam process working on {what} (lock {})",
                        path.display()
                    );
                }
                told = true;
                tracing::info!(lock = %path.display(), "waiting for lock");
                file.lock().at(path)?;
            }
            Err(TryLockError::Error(e)) => return Err(e).at(path),
        }
        if still_linked(&file, path) {
            return Ok(Lock {
                file: Some(file),
                path: path.to_path_buf(),
            });
        }
        // The holder we waited for removed the file on release: lock the path afresh.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_until_the_first_drops() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("sub/x.lock");
        let first = acquire(&p, "x", true).unwrap();
        // flock conflicts between separate open file descriptions, even in one process.
        let other = File::open(&p).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop(first);
        other.try_lock().unwrap();
    }
}
