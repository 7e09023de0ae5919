//! Output hygiene for every command that writes files: never overwrite an input, never leave a half-written
//! output behind.
//!
//! - [`refuse_input_overwrite`]: call before any work with the output path and every input path; it refuses
//!   an output that is the same file as an input however it is spelled (symlinks, `..`, hard links: the
//!   comparison is by device and inode), and an output that is an existing directory.
//! - [`refuse_inputs_inside`]: the same for a command that writes a whole directory (`data synth --out DIR`):
//!   no input may live inside it.
//! - [`AtomicFile`] / [`write_atomic`]: write into a temporary file beside the target and rename it into
//!   place only when complete, so a failure or an interrupt leaves the previous file (or none), never a
//!   truncated one. The temporary file is removed when the writer is dropped without [`AtomicFile::commit`].
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "{out_flag} {out} is the same file as {in_flag} {input}; refusing to overwrite an input \
         (choose another output path)"
    )]
    IsInput {
        out_flag: String,
        out: PathBuf,
        in_flag: String,
        input: PathBuf,
    },
    #[error(
        "{in_flag} {input} lies inside the output directory {out_flag} {out}, which is written over; \
         move it or choose another output directory"
    )]
    InputInside {
        out_flag: String,
        out: PathBuf,
        in_flag: String,
        input: PathBuf,
    },
    #[error(
        "{out_flag} {out} lies inside {in_flag} {dir}, whose files are inputs; refusing to write there \
         (choose a path outside it)"
    )]
    InsideInputDir {
        out_flag: String,
        out: PathBuf,
        in_flag: String,
        dir: PathBuf,
    },
    #[error("{out_flag} {out} is a directory; give a file path")]
    IsDirectory { out_flag: String, out: PathBuf },
    #[error("{out_flag} {out} exists and is not a directory")]
    NotADirectory { out_flag: String, out: PathBuf },
    #[error("cannot write {path}: {err}")]
    Write { path: PathBuf, err: std::io::Error },
}

/// (device, inode) of what `p` points to, following symlinks; `None` when it does not exist.
fn identity(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Refuses `out` when it is an existing directory or the same file as any of `inputs` (`(flag, path)`),
/// through symlinks, `..` and hard links. An output that does not exist yet cannot be an input.
pub fn refuse_input_overwrite(
    out: &Path,
    out_flag: &str,
    inputs: &[(&str, &Path)],
) -> Result<(), OutputError> {
    if out.is_dir() {
        return Err(OutputError::IsDirectory {
            out_flag: out_flag.into(),
            out: out.into(),
        });
    }
    let Some(id) = identity(out) else {
        return Ok(());
    };
    for (flag, input) in inputs {
        if identity(input) == Some(id) {
            return Err(OutputError::IsInput {
                out_flag: out_flag.into(),
                out: out.into(),
                in_flag: flag.to_string(),
                input: input.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Refuses an output directory `out` (written over file by file) that is an existing non-directory, or that
/// contains (or is) any of `inputs`.
pub fn refuse_inputs_inside(
    out: &Path,
    out_flag: &str,
    inputs: &[(&str, &Path)],
) -> Result<(), OutputError> {
    if out.exists() && !out.is_dir() {
        return Err(OutputError::NotADirectory {
            out_flag: out_flag.into(),
            out: out.into(),
        });
    }
    let Ok(root) = out.canonicalize() else {
        return Ok(()); // not there yet: nothing inside it
    };
    for (flag, input) in inputs {
        if let Ok(p) = input.canonicalize() {
            if p.starts_with(&root) {
                return Err(OutputError::InputInside {
                    out_flag: out_flag.into(),
                    out: out.into(),
                    in_flag: flag.to_string(),
                    input: input.to_path_buf(),
                });
            }
        }
    }
    Ok(())
}

/// Refuses an output file `out` that lies inside any of the input directories `dirs` (`(flag, dir)`: folders
/// whose files a command reads, such as score maps), through symlinks and `..`, and an output that is an
/// existing directory. An output whose folder does not exist yet lies in no input directory.
pub fn refuse_output_in_input_dirs(
    out: &Path,
    out_flag: &str,
    dirs: &[(&str, &Path)],
) -> Result<(), OutputError> {
    refuse_input_overwrite(out, out_flag, &[])?;
    let resolved = match out.canonicalize() {
        Ok(p) => p,
        Err(_) => {
            let parent = match out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            match (parent.canonicalize(), out.file_name()) {
                (Ok(p), Some(name)) => p.join(name),
                _ => return Ok(()),
            }
        }
    };
    for (flag, dir) in dirs {
        if let Ok(d) = dir.canonicalize() {
            if d.is_dir() && resolved.starts_with(&d) {
                return Err(OutputError::InsideInputDir {
                    out_flag: out_flag.into(),
                    out: out.into(),
                    in_flag: flag.to_string(),
                    dir: dir.to_path_buf(),
                });
            }
        }
    }
    Ok(())
}

/// A file written under a temporary name beside `path` and renamed into place by [`AtomicFile::commit`].
/// Dropped uncommitted, it removes the temporary file and leaves `path` as it was.
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
}

impl AtomicFile {
    /// Creates the temporary file (and `path`'s missing parent directories).
    pub fn create(path: &Path) -> Result<Self, OutputError> {
        let werr = |err| OutputError::Write {
            path: path.into(),
            err,
        };
        let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(werr)?;
                d.to_path_buf()
            }
            None => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(werr)?;
        Ok(AtomicFile {
            tmp,
            path: path.into(),
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary file (for positioned writes).
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    pub fn file_mut(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Flushes to disk and renames over `path`.
    pub fn commit(self) -> Result<(), OutputError> {
        let path = self.path;
        let werr = |err| OutputError::Write {
            path: path.clone(),
            err,
        };
        self.tmp.as_file().sync_all().map_err(werr)?;
        self.tmp.persist(&path).map_err(|e| werr(e.error))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

/// Writes `bytes` to `path` atomically (temporary file + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes).map_err(|err| OutputError::Write {
        path: path.into(),
        err,
    })?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_inside_an_input_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let maps = d.path().join("maps");
        std::fs::create_dir(&maps).unwrap();
        std::fs::write(maps.join("a.npy"), b"x").unwrap();
        std::os::unix::fs::symlink(&maps, d.path().join("alias")).unwrap();
        for out in [
            maps.join("a.npy"),
            maps.join("new.json"),
            d.path().join("alias/new.json"),
            d.path().join("maps/../maps/new.json"),
        ] {
            let e = refuse_output_in_input_dirs(&out, "--curves", &[("--scoremaps", &maps)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("--curves") && e.contains("--scoremaps"), "{e}");
        }
        for out in [
            d.path().join("curves.json"),
            d.path().join("nodir/curves.json"),
        ] {
            refuse_output_in_input_dirs(&out, "--curves", &[("--scoremaps", &maps)]).unwrap();
        }
    }

    #[test]
    fn the_same_file_however_spelled_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("cams.safetensors");
        std::fs::write(&input, b"x").unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        let dotdot = d.path().join("sub/../cams.safetensors");
        let link = d.path().join("link.safetensors");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let hard = d.path().join("hard.safetensors");
        std::fs::hard_link(&input, &hard).unwrap();
        for out in [&input, &dotdot, &link, &hard] {
            let e = refuse_input_overwrite(out, "--out", &[("--cams", &input)]).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("--out") && msg.contains("--cams"), "{msg}");
        }
        // The input given through a symlink, the output as the real path.
        assert!(refuse_input_overwrite(&input, "--out", &[("--cams", &link)]).is_err());
        let other = d.path().join("new.safetensors");
        refuse_input_overwrite(&other, "--out", &[("--cams", &input)]).unwrap();
        assert!(matches!(
            refuse_input_overwrite(d.path(), "--out", &[]),
            Err(OutputError::IsDirectory { .. })
        ));
    }

    #[test]
    fn inputs_inside_an_output_directory_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("out/cfg.toml");
        std::fs::create_dir(d.path().join("out")).unwrap();
        std::fs::write(&cfg, b"").unwrap();
        let out = d.path().join("out");
        assert!(refuse_inputs_inside(&out, "--out", &[("--config", &cfg)]).is_err());
        refuse_inputs_inside(&d.path().join("other"), "--out", &[("--config", &cfg)]).unwrap();
        assert!(matches!(
            refuse_inputs_inside(&cfg, "--out", &[]),
            Err(OutputError::NotADirectory { .. })
        ));
    }

    #[test]
    fn atomic_writes_leave_nothing_half_written() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b.txt");
        write_atomic(&p, b"one").unwrap();
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.write_all(b"partial").unwrap();
            // dropped without commit: the old content stays, no temporary file is left
        }
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        let names: Vec<_> = std::fs::read_dir(d.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
    }
}
