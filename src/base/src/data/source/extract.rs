//! Safe extraction of tar, tar.gz/tgz and zip archives.
//!
//! The format is sniffed from the magic bytes, never trusted from the extension (TFDS notes that some
//! ".tar.gz" files are plain tar). Everything is written into `<dest>.extracting`, which is renamed to `<dest>`
//! only when the whole archive was extracted; the completion marker `.contracam-extracted.json` travels inside
//! that rename, so a tree without it is half-extracted and is removed and redone. Refused, with nothing left
//! behind: absolute paths, `..` components, links pointing outside the tree, entries written through a link,
//! device files/FIFOs, and archives that expand past a size or ratio cap (decompression bombs).
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::store::{now_unix, read_json, write_json_atomic};
use crate::data::error::{DataError, IoContext, Result};

pub const MARKER: &str = ".contracam-extracted.json";

#[derive(Debug, Clone, Copy)]
pub struct ExtractLimits {
    /// Absolute cap on the bytes written.
    pub max_bytes: u64,
    /// Cap on expanded size / archive size (plus 16 MiB of slack for tiny archives).
    pub max_ratio: u64,
    pub max_entries: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        // The largest real archive (ImageNet train, 148 GB) expands ~1:1; COCO annotations ~1:3.2.
        ExtractLimits {
            max_bytes: 1 << 40,
            max_ratio: 100,
            max_entries: 20_000_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExtractMarker {
    pub archive: String,
    pub archive_size: u64,
    pub format: String,
    pub files: u64,
    pub bytes: u64,
    pub extracted_at_unix: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    Tar,
    TarGz,
    Zip,
}

pub fn sniff_format(path: &Path) -> Result<ArchiveFormat> {
    let mut f = File::open(path).at(path)?;
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]).at(path)? {
            0 => break,
            k => n += k,
        }
    }
    if n >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        Ok(ArchiveFormat::TarGz)
    } else if n >= 4 && (&head[..4] == b"PK\x03\x04" || &head[..4] == b"PK\x05\x06") {
        Ok(ArchiveFormat::Zip)
    } else if n == 512 && (&head[257..262] == b"ustar" || tar_checksum_ok(&head)) {
        Ok(ArchiveFormat::Tar)
    } else {
        Err(DataError::Archive {
            archive: path.into(),
            msg: "not a tar, tar.gz or zip archive (unrecognised magic bytes)".into(),
        })
    }
}

/// A tar header block (POSIX, GNU or old v7, which has no "ustar" magic): its checksum field matches.
fn tar_checksum_ok(h: &[u8; 512]) -> bool {
    let field = String::from_utf8_lossy(&h[148..156]);
    let Ok(stored) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as u32
            } else {
                b as u32
            }
        })
        .sum();
    sum == stored && h[0] != 0
}

/// Is the completed extraction of `archive` at `dest`?
pub fn is_extracted(archive: &Path, dest: &Path) -> bool {
    let Ok(m) = read_json::<ExtractMarker>(&dest.join(MARKER)) else {
        return false;
    };
    std::fs::metadata(archive).is_ok_and(|a| a.len() == m.archive_size)
}

/// Extract `archive` to `dest` (unless already complete). A half-extracted `dest` is removed and redone.
pub fn extract(archive: &Path, dest: &Path, limits: &ExtractLimits) -> Result<ExtractMarker> {
    if is_extracted(archive, dest) {
        return read_json(&dest.join(MARKER));
    }
    if dest.exists() {
        tracing::warn!(
            "{} is incomplete (no completion marker): extracting again",
            dest.display()
        );
        std::fs::remove_dir_all(dest).at(dest)?;
    }
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dest.with_file_name(format!("{name}.extracting"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).at(&tmp)?;
    }
    // Before the temporary tree exists, so that an unreadable or unknown archive leaves nothing behind.
    let archive_size = std::fs::metadata(archive).at(archive)?.len();
    let format = sniff_format(archive)?;
    std::fs::create_dir_all(&tmp).at(&tmp)?;
    // The expanded tree is at least as large as a tar (a lower bound for compressed formats).
    if let Err(e) = super::download::ensure_space(&tmp, archive_size) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let mut ctx = Ctx {
        archive,
        root: &tmp,
        limits,
        archive_size,
        bytes: 0,
        files: 0,
        entries: 0,
    };
    let r = match format {
        ArchiveFormat::Tar => ctx.tar(File::open(archive).at(archive)?),
        ArchiveFormat::TarGz => ctx.tar(flate2::read::GzDecoder::new(
            File::open(archive).at(archive)?,
        )),
        ArchiveFormat::Zip => ctx.zip(),
    };
    if let Err(e) = r {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let marker = ExtractMarker {
        archive: archive
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        archive_size,
        format: format!("{format:?}").to_lowercase(),
        files: ctx.files,
        bytes: ctx.bytes,
        extracted_at_unix: now_unix(),
    };
    write_json_atomic(&tmp.join(MARKER), &marker)?;
    std::fs::rename(&tmp, dest).at(dest)?;
    Ok(marker)
}

struct Ctx<'a> {
    archive: &'a Path,
    root: &'a Path,
    limits: &'a ExtractLimits,
    archive_size: u64,
    bytes: u64,
    files: u64,
    entries: u64,
}

/// Normalise an archive member path: only plain components; refuse absolute paths and `..`.
pub fn safe_relative(raw: &str) -> std::result::Result<PathBuf, String> {
    if raw.starts_with('/') || raw.starts_with('\\') || raw.as_bytes().get(1) == Some(&b':') {
        return Err("has an absolute path".into());
    }
    let mut out = PathBuf::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("has a `..` component".into()),
            Component::RootDir | Component::Prefix(_) => return Err("has an absolute path".into()),
        }
    }
    Ok(out)
}

/// Where a link at `link` (relative to the root) pointing to `target` ends up, if it stays in the tree.
/// Lexical, so only sound for targets without a `..` after a name (see [`dotdot_after_name`]).
fn link_stays_inside(link: &Path, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut stack: Vec<std::ffi::OsString> = link
        .parent()
        .map(|p| p.components().map(|c| c.as_os_str().to_owned()).collect())
        .unwrap_or_default();
    for c in Path::new(target).components() {
        match c {
            Component::Normal(p) => stack.push(p.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                if stack.pop().is_none() {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

/// A link target with `..` after a name (`q/../x`): if `q` is itself a link, the `..` climbs from where `q`
/// points, which the lexical check cannot see (`d/q -> ..` then `d/p -> q/../x` leaves the tree).
fn dotdot_after_name(target: &str) -> bool {
    let mut named = false;
    for c in Path::new(target).components() {
        match c {
            Component::Normal(_) => named = true,
            Component::ParentDir if named => return true,
            _ => {}
        }
    }
    false
}

impl Ctx<'_> {
    fn unsafe_entry(&self, entry: &str, why: impl Into<String>) -> DataError {
        DataError::UnsafeArchive {
            archive: self.archive.into(),
            entry: entry.into(),
            why: why.into(),
        }
    }

    fn cap(&self) -> u64 {
        self.limits.max_bytes.min(
            self.archive_size
                .saturating_mul(self.limits.max_ratio)
                .saturating_add(16 << 20),
        )
    }

    fn bomb(&self, why: String) -> DataError {
        DataError::ArchiveBomb {
            archive: self.archive.into(),
            why,
        }
    }

    fn count_entry(&mut self) -> Result<()> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(self.bomb(format!("more than {} entries", self.limits.max_entries)));
        }
        Ok(())
    }

    /// Refuse to write through a symlink created by an earlier entry.
    fn check_no_link_ancestor(&self, rel: &Path, raw: &str) -> Result<()> {
        let mut p = self.root.to_path_buf();
        let comps: Vec<_> = rel.components().collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            p.push(c);
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(self.unsafe_entry(raw, "would be written through a symbolic link"));
            }
        }
        Ok(())
    }

    fn write_file(
        &mut self,
        rel: &Path,
        raw: &str,
        declared: u64,
        mut r: impl Read,
        mode: Option<u32>,
    ) -> Result<()> {
        let cap = self.cap();
        if self.bytes.saturating_add(declared) > cap {
            return Err(self.bomb(format!(
                "entry `{raw}` declares {declared} bytes; total would pass the cap of {cap} bytes \
                 ({}x the {}-byte archive, at most {})",
                self.limits.max_ratio, self.archive_size, self.limits.max_bytes
            )));
        }
        self.check_no_link_ancestor(rel, raw)?;
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        let mut f = File::create(&path).at(&path)?;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(DataError::Archive {
                        archive: self.archive.into(),
                        msg: format!("reading `{raw}`: {e}"),
                    })
                }
            };
            self.bytes += n as u64;
            if self.bytes > cap {
                return Err(self.bomb(format!("more than {cap} bytes written (at `{raw}`)")));
            }
            f.write_all(&buf[..n]).at(&path)?;
        }
        self.files += 1;
        #[cfg(unix)]
        if let Some(m) = mode {
            use std::os::unix::fs::PermissionsExt;
            // Keep the executable bits only; never setuid/setgid/sticky, always owner-writable.
            let _ = std::fs::set_permissions(
                &path,
                std::fs::Permissions::from_mode((m & 0o755) | 0o600),
            );
        }
        Ok(())
    }

    fn make_symlink(&mut self, rel: &Path, raw: &str, target: &str) -> Result<()> {
        if dotdot_after_name(target) {
            return Err(self.unsafe_entry(
                raw,
                format!(
                    "is a link to `{target}`, whose `..` follows a name (through another link it could \
                     leave the archive's tree)"
                ),
            ));
        }
        if !link_stays_inside(rel, target) {
            return Err(self.unsafe_entry(
                raw,
                format!("is a link to `{target}`, outside the archive's tree"),
            ));
        }
        self.check_no_link_ancestor(rel, raw)?;
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(target, &path).at(&path)?;
        Ok(())
    }

    fn tar(&mut self, reader: impl Read) -> Result<()> {
        let mut ar = tar::Archive::new(reader);
        let entries = ar.entries().map_err(|e| DataError::Archive {
            archive: self.archive.into(),
            msg: e.to_string(),
        })?;
        for entry in entries {
            let mut entry = entry.map_err(|e| DataError::Archive {
                archive: self.archive.into(),
                msg: e.to_string(),
            })?;
            self.count_entry()?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let kind = entry.header().entry_type();
            use tar::EntryType as T;
            if matches!(
                kind,
                T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
            ) {
                continue;
            }
            let rel = safe_relative(&raw).map_err(|why| self.unsafe_entry(&raw, why))?;
            if rel.as_os_str().is_empty() {
                continue;
            }
            match kind {
                T::Regular | T::Continuous | T::GNUSparse => {
                    let declared = entry.size();
                    let mode = entry.header().mode().ok();
                    self.write_file(&rel, &raw, declared, &mut entry, mode)?;
                }
                T::Directory => {
                    self.check_no_link_ancestor(&rel, &raw)?;
                    let p = self.root.join(&rel);
                    std::fs::create_dir_all(&p).at(&p)?;
                }
                T::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    self.make_symlink(&rel, &raw, &target)?;
                }
                T::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    let trel = safe_relative(&target).map_err(|why| {
                        self.unsafe_entry(&raw, format!("is a hard link whose target {why}"))
                    })?;
                    self.check_no_link_ancestor(&rel, &raw)?;
                    self.check_no_link_ancestor(&trel, &raw)?;
                    let src = self.root.join(&trel);
                    if !src.is_file()
                        || std::fs::symlink_metadata(&src).is_ok_and(|m| m.file_type().is_symlink())
                    {
                        return Err(self.unsafe_entry(&raw, format!("is a hard link to `{target}`, which is not a file extracted earlier")));
                    }
                    let dst = self.root.join(&rel);
                    if let Some(parent) = dst.parent() {
                        std::fs::create_dir_all(parent).at(parent)?;
                    }
                    std::fs::hard_link(&src, &dst).at(&dst)?;
                    self.files += 1;
                }
                T::Char | T::Block | T::Fifo => {
                    return Err(self.unsafe_entry(&raw, "is a device file or FIFO"))
                }
                other => {
                    return Err(
                        self.unsafe_entry(&raw, format!("has an unsupported type {other:?}"))
                    )
                }
            }
        }
        Ok(())
    }

    fn zip(&mut self) -> Result<()> {
        let f = File::open(self.archive).at(self.archive)?;
        let err = |e: zip::result::ZipError| DataError::Archive {
            archive: self.archive.into(),
            msg: e.to_string(),
        };
        let mut z = zip::ZipArchive::new(f).map_err(err)?;
        // First pass on the central directory: names, types and declared sizes, before writing anything.
        let mut declared_total: u64 = 0;
        for i in 0..z.len() {
            let e = z.by_index(i).map_err(err)?;
            let raw = String::from_utf8_lossy(e.name_raw()).into_owned();
            safe_relative(&raw).map_err(|why| self.unsafe_entry(&raw, why))?;
            if let Some(mode) = e.unix_mode() {
                let t = mode & 0o170000;
                if t == 0o020000 || t == 0o060000 || t == 0o010000 || t == 0o140000 {
                    return Err(self.unsafe_entry(&raw, "is a device file, FIFO or socket"));
                }
            }
            declared_total = declared_total.saturating_add(e.size());
        }
        if declared_total > self.cap() {
            return Err(self.bomb(format!(
                "entries declare {declared_total} bytes, more than the cap of {}",
                self.cap()
            )));
        }
        for i in 0..z.len() {
            self.count_entry()?;
            let mut e = z.by_index(i).map_err(err)?;
            let raw = String::from_utf8_lossy(e.name_raw()).into_owned();
            let rel = safe_relative(&raw).map_err(|why| self.unsafe_entry(&raw, why))?;
            if rel.as_os_str().is_empty() {
                continue;
            }
            if e.is_symlink() {
                let mut target = String::new();
                e.read_to_string(&mut target)
                    .map_err(|x| DataError::Archive {
                        archive: self.archive.into(),
                        msg: x.to_string(),
                    })?;
                self.make_symlink(&rel, &raw, &target)?;
            } else if e.is_dir() {
                self.check_no_link_ancestor(&rel, &raw)?;
                let p = self.root.join(&rel);
                std::fs::create_dir_all(&p).at(&p)?;
            } else {
                let declared = e.size();
                let mode = e.unix_mode();
                self.write_file(&rel, &raw, declared, &mut e, mode)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(safe_relative("a/./b").unwrap(), PathBuf::from("a/b"));
        assert!(safe_relative("../x").is_err());
        assert!(safe_relative("a/../../x").is_err());
        assert!(safe_relative("/etc/passwd").is_err());
    }

    #[test]
    fn link_targets() {
        assert!(link_stays_inside(Path::new("a/b/l"), "../c"));
        assert!(!link_stays_inside(Path::new("a/l"), "../../c"));
        assert!(!link_stays_inside(Path::new("l"), "/etc"));
        assert!(dotdot_after_name("q/../x") && dotdot_after_name("../a/.."));
        assert!(!dotdot_after_name("../../a/b") && !dotdot_after_name("./a"));
    }
}
