//! Advisory file locks (flock) so two contracam processes sharing a data dir never write the same
//! download, extraction or index at once. The second one waits, then finds the work done.
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::data::error::{IoContext, Result};

/// Held until dropped (closing the file releases the lock, also when the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    pub path: PathBuf,
}

/// Lock `path` (created if missing), waiting for another holder. `what` says what is being protected,
/// for the message printed while waiting.
pub fn acquire(path: &Path, what: &str, quiet: bool) -> Result<Lock> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).at(p)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .at(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            if !quiet {
                eprintln!(
                    "waiting for another contracam process working on {what} (lock {})",
                    path.display()
                );
            }
            tracing::info!(lock = %path.display(), "waiting for lock");
            file.lock().at(path)?;
        }
        Err(TryLockError::Error(e)) => return Err(e).at(path),
    }
    Ok(Lock {
        _file: file,
        path: path.to_path_buf(),
    })
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
