//! The operations behind `contracam data …`: list, fetch, verify, instructions, register (`build`, which
//! runs the torch-side builders, is `contracam::data::ops::build`).
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use super::error::{DataError, Result};
use crate::data::source::download::{
    self, http_client, DownloadOptions, DownloadProgress, FileJob,
};
use crate::data::source::extract::ExtractLimits;
use crate::data::source::lock;
use crate::data::source::manifest::{ChecksumKind, FileSpec, Manifest, Registry};
use crate::data::source::store::{self, expected_for, DatasetDir, Registered, Status};

#[derive(Debug, Clone)]
pub struct DataOptions {
    pub data_dir: PathBuf,
    /// URL prefixes tried before the manifest's urls: `<prefix>/<dataset>/<file>`.
    pub mirrors: Vec<String>,
    pub offline: bool,
    pub jobs: usize,
    /// Download files that have no published checksum and record the hashes computed.
    pub register: bool,
    pub include_optional: bool,
    pub quiet: bool,
    pub download: DownloadOptions,
    pub limits: ExtractLimits,
    /// User-provided folder for generated/gated sets (ImageNet class folders, Stylized-ImageNet).
    pub source: Option<PathBuf>,
}

impl DataOptions {
    pub fn new(data_dir: PathBuf) -> Self {
        DataOptions {
            data_dir,
            mirrors: vec![],
            offline: false,
            jobs: 2,
            register: false,
            include_optional: false,
            quiet: true,
            download: DownloadOptions::default(),
            limits: ExtractLimits::default(),
            source: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ListRow {
    pub dataset: String,
    pub title: String,
    pub files: usize,
    /// Sum of the known sizes of the required files.
    pub bytes: u64,
    /// Required files whose size is not published.
    pub unknown_sizes: usize,
    /// Checksum kinds of the required files, e.g. "sha256" or "sha256+md5-only+none".
    pub checksums: String,
    pub gated: bool,
    pub generated: bool,
    /// The builder `data build` runs; `None`: download only.
    pub builder: Option<String>,
    pub status: Status,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub dataset: String,
    pub file: String,
    pub action: &'static str,
    pub sha256: String,
    pub size: u64,
}

pub struct Data {
    pub registry: Registry,
    pub opts: DataOptions,
}

fn several(errs: Vec<DataError>) -> DataError {
    if errs.len() == 1 {
        return errs.into_iter().next().expect("one error");
    }
    DataError::Several {
        count: errs.len(),
        list: errs
            .iter()
            .map(|e| format!("- {e}"))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

impl Data {
    pub fn new(registry: Registry, opts: DataOptions) -> Self {
        Data { registry, opts }
    }

    /// The files of `m` this run handles (optional ones only with `include_optional`).
    pub fn wanted<'a>(&self, m: &'a Manifest) -> Vec<&'a FileSpec> {
        m.files
            .iter()
            .filter(|f| self.opts.include_optional || !f.optional)
            .collect()
    }

    pub fn list(&self) -> Vec<ListRow> {
        self.registry
            .datasets
            .values()
            .map(|m| {
                let files: Vec<&FileSpec> = m.files.iter().filter(|f| !f.optional).collect();
                let mut kinds: Vec<&str> = files
                    .iter()
                    .map(|f| match f.checksum_kind() {
                        ChecksumKind::Sha256 => "sha256",
                        ChecksumKind::Md5 => "md5-only",
                        _ => "none",
                    })
                    .collect();
                kinds.sort();
                kinds.dedup();
                ListRow {
                    dataset: m.name().into(),
                    title: m.dataset.title.clone(),
                    files: files.len(),
                    bytes: files.iter().filter_map(|f| f.size).sum(),
                    unknown_sizes: files.iter().filter(|f| f.size.is_none()).count(),
                    checksums: if kinds.is_empty() {
                        "-".into()
                    } else {
                        kinds.join("+")
                    },
                    gated: m.dataset.gated,
                    generated: m.dataset.generated,
                    builder: m.dataset.builder.clone(),
                    status: store::dataset_status(&self.opts.data_dir, m, false),
                }
            })
            .collect()
    }

    pub fn instructions(&self, name: &str) -> Result<String> {
        let m = self.registry.get(name)?;
        let dir = DatasetDir::new(&self.opts.data_dir, name);
        let mut s = format!("{} ({})\n", m.dataset.title, m.name());
        if let Some(h) = &m.dataset.homepage {
            s += &format!("homepage: {h}\n");
        }
        if let Some(l) = &m.dataset.licence {
            s += &format!("licence:  {l}\n");
        }
        if let Some(c) = &m.dataset.citation {
            s += &format!("cite:     {c}\n");
        }
        s += "\n";
        match &m.dataset.instructions {
            Some(i) => s += i.trim(),
            None => s += &format!("Download automatically with `contracam data fetch {name}`."),
        }
        s += "\n";
        if !m.files.is_empty() {
            s += &format!("\nFiles (in {}):\n", dir.downloads().display());
            for f in &m.files {
                let size = f
                    .size
                    .map(|s| format!("{s} bytes"))
                    .unwrap_or_else(|| "size unknown".into());
                let sum = match (&f.sha256, &f.md5) {
                    (Some(h), _) => format!("sha256 {h}"),
                    (None, Some(h)) => format!("md5 {h} (only md5 is published)"),
                    _ => "no published checksum (unverified: needs `data register`)".into(),
                };
                let opt = if f.optional { " [optional]" } else { "" };
                s += &format!("  {}{opt}: {size}, {sum}\n", f.name);
                for u in &f.urls {
                    s += &format!("      {u}\n");
                }
            }
        }
        Ok(s)
    }

    fn urls_for(&self, dataset: &str, f: &FileSpec) -> Vec<String> {
        let mut urls: Vec<String> = self
            .opts
            .mirrors
            .iter()
            .map(|p| format!("{}/{}/{}", p.trim_end_matches('/'), dataset, f.name))
            .collect();
        urls.extend(f.urls.iter().cloned());
        urls
    }

    /// Fetch (and verify) the files of the named datasets, several at once.
    pub fn fetch(&self, names: &[String]) -> Result<Vec<FileReport>> {
        let mut jobs: Vec<(&Manifest, &FileSpec)> = vec![];
        for n in names {
            let m = self.registry.get(n)?;
            if m.dataset.generated && m.files.is_empty() {
                continue;
            }
            for f in self.wanted(m) {
                jobs.push((m, f));
            }
        }
        // A gated file the user has not placed yet: say so before downloading the public files beside it.
        let unplaced: Vec<DataError> = jobs
            .iter()
            .filter(|(m, f)| {
                m.file_gated(f)
                    && !DatasetDir::new(&self.opts.data_dir, m.name())
                        .file(&f.name)
                        .exists()
            })
            .map(|(m, f)| DataError::Gated {
                dataset: m.name().into(),
                file: f.name.clone(),
                expected: DatasetDir::new(&self.opts.data_dir, m.name()).file(&f.name),
                instructions: m.dataset.instructions.clone().unwrap_or_default(),
            })
            .collect();
        if !unplaced.is_empty() {
            return Err(several(unplaced));
        }
        let total: u64 = jobs.iter().filter_map(|(_, f)| f.size).sum();
        let progress = DownloadProgress::new(self.opts.quiet, total);
        let client = http_client(&self.opts.download)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.opts.jobs.max(1))
            .build()
            .map_err(|e| DataError::Build {
                dataset: "-".into(),
                msg: e.to_string(),
            })?;
        let results: Vec<Result<FileReport>> = pool.install(|| {
            jobs.par_iter()
                .map(|(m, f)| self.fetch_one(&client, m, f, &progress))
                .collect()
        });
        progress.overall.finish();
        let (ok, errs): (Vec<_>, Vec<_>) = results.into_iter().partition(|r| r.is_ok());
        let errs: Vec<DataError> = errs.into_iter().filter_map(|r| r.err()).collect();
        if !errs.is_empty() {
            return Err(several(errs));
        }
        Ok(ok.into_iter().filter_map(|r| r.ok()).collect())
    }

    fn fetch_one(
        &self,
        client: &reqwest::blocking::Client,
        m: &Manifest,
        f: &FileSpec,
        progress: &DownloadProgress,
    ) -> Result<FileReport> {
        let name = m.name();
        let dir = DatasetDir::new(&self.opts.data_dir, name);
        let registered = Registered::load(&dir.registered())?;
        let expected = expected_for(f, &registered);
        let path = dir.file(&f.name);
        // Another process fetching the same file: wait for it, then find the file verified below.
        let _lock = lock::acquire(
            &dir.file_lock(&f.name),
            &format!("{name}/{}", f.name),
            self.opts.quiet,
        )?;
        let report = |action, d: &crate::data::source::hash::Digests| FileReport {
            dataset: name.into(),
            file: f.name.clone(),
            action,
            sha256: d.sha256.clone(),
            size: d.size,
        };
        if path.exists() {
            if store::file_status(&dir, f, &registered) == Status::Verified {
                let mk: store::VerifiedMarker = store::read_json(&dir.verified_marker(&f.name))?;
                let d = crate::data::source::hash::Digests {
                    sha256: mk.sha256,
                    md5: mk.md5,
                    size: mk.size,
                };
                progress.overall.inc(d.size);
                return Ok(report("already verified", &d));
            }
            // Placed by the user (gated data, --offline copies): check it rather than download again.
            if expected.kind == ChecksumKind::None && self.opts.register {
                let d = crate::data::source::hash::hash_file(&path, true, |_| {})?;
                record_registration(&dir, &f.name, &d, "(placed by the user)")?;
                download::write_marker(&dir, &f.name, &d, "registered", None)?;
                return Ok(report("registered", &d));
            }
            let d = download::verify_in_place(&dir, &f.name, &expected, progress)?;
            progress.overall.inc(d.size);
            return Ok(report("verified", &d));
        }
        if m.file_gated(f) {
            return Err(DataError::Gated {
                dataset: name.into(),
                file: f.name.clone(),
                expected: path,
                instructions: m.dataset.instructions.clone().unwrap_or_default(),
            });
        }
        if self.opts.offline {
            return Err(DataError::Offline {
                dataset: name.into(),
                file: f.name.clone(),
                expected: path,
            });
        }
        let job = FileJob {
            dataset: name,
            name: &f.name,
            dir: &dir,
            expected,
            urls: self.urls_for(name, f),
            register: self.opts.register,
        };
        let d = download::download_file(client, &job, &self.opts.download, progress)?;
        Ok(report(
            if job.expected.kind == ChecksumKind::None {
                "downloaded+registered"
            } else {
                "downloaded"
            },
            &d,
        ))
    }

    /// Re-hash every present file of the named datasets against its checksum.
    pub fn verify(&self, names: &[String]) -> Result<Vec<FileReport>> {
        let progress = DownloadProgress::new(self.opts.quiet, 0);
        let mut out = vec![];
        let mut errs = vec![];
        for n in names {
            let m = self.registry.get(n)?;
            let dir = DatasetDir::new(&self.opts.data_dir, n);
            let registered = Registered::load(&dir.registered())?;
            for f in self.wanted(m) {
                if !dir.file(&f.name).exists() {
                    let hint = if m.file_gated(f) {
                        format!("place it there (see `contracam data instructions {n}`)")
                    } else {
                        format!("run `contracam data fetch {n}`")
                    };
                    errs.push(DataError::Format {
                        path: dir.file(&f.name),
                        msg: format!("missing; {hint}"),
                    });
                    continue;
                }
                let _lock = lock::acquire(
                    &dir.file_lock(&f.name),
                    &format!("{n}/{}", f.name),
                    self.opts.quiet,
                )?;
                match download::verify_in_place(
                    &dir,
                    &f.name,
                    &expected_for(f, &registered),
                    &progress,
                ) {
                    Ok(d) => out.push(FileReport {
                        dataset: n.clone(),
                        file: f.name.clone(),
                        action: "verified",
                        sha256: d.sha256,
                        size: d.size,
                    }),
                    Err(e) => errs.push(e),
                }
            }
        }
        if !errs.is_empty() {
            return Err(several(errs));
        }
        Ok(out)
    }

    /// `data register`: fetch with registration on, so files without a published checksum are downloaded
    /// (or, when already present, hashed) and their hashes recorded in `<dataset>/registered.toml`.
    pub fn register(&self, names: &[String]) -> Result<Vec<FileReport>> {
        let mut d = Data::new(self.registry.clone(), self.opts.clone());
        d.opts.register = true;
        d.fetch(names)
    }
}

fn record_registration(
    dir: &DatasetDir,
    file: &str,
    d: &crate::data::source::hash::Digests,
    url: &str,
) -> Result<()> {
    let path = dir.registered();
    let mut reg = Registered::load(&path)?;
    reg.files.insert(
        file.to_string(),
        store::RegisteredFile {
            size: d.size,
            sha256: d.sha256.clone(),
            md5: d.md5.clone().unwrap_or_default(),
            url: url.into(),
            registered_at_unix: store::now_unix(),
        },
    );
    reg.save(&path)
}
