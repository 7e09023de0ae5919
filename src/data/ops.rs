//! The operations behind `contracam data …`. All but `build` are torch-free and live in `contracam_base`
//! (re-exported here, so their paths are unchanged); `build` runs the builders, which need libtorch.
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use contracam_base::data::ops::*;

use super::builders::{self, BuildContext};
use super::error::{DataError, IoContext, Result};
use super::index::SplitIndex;
use super::source::download::DownloadProgress;
use super::source::extract;
use super::source::lock;
use super::source::manifest::FileSpec;
use super::source::store::{self, DatasetDir};
use crate::util::progress::{Progress, Unit};

/// Fetch, verify, extract and index: `data build`. It lives here, not beside the other operations in
/// `contracam_base`, because the builders draw the official splits with libtorch's `randperm`.
pub fn build(data: &Data, names: &[String]) -> Result<Vec<PathBuf>> {
    let mut written = vec![];
    for n in names {
        let m = data.registry.get(n)?;
        let Some(builder_name) = m.dataset.builder.clone() else {
            return Err(DataError::Build {
                dataset: n.clone(),
                msg: "has no builder (download-only); use `data fetch`".into(),
            });
        };
        let build = builders::by_name(&builder_name).ok_or_else(|| DataError::Build {
            dataset: n.clone(),
            msg: format!(
                "unknown builder `{builder_name}` (manifest {})",
                m.origin.display()
            ),
        })?;
        let dir = DatasetDir::new(&data.opts.data_dir, n);
        // One extraction and indexing per dataset at a time (fetch takes its own per-file locks).
        let _lock = lock::acquire(&dir.build_lock(), n, data.opts.quiet)?;
        if !m.files.is_empty() {
            data.fetch(std::slice::from_ref(n))?;
        }
        let archives: Vec<&FileSpec> = data
            .wanted(m)
            .into_iter()
            .filter(|f| f.should_extract())
            .collect();
        // Extraction and indexing take minutes on the large sets: one line per step, plus a bar.
        let steps = Progress::new(
            &format!("build {n}"),
            Some(archives.len() as u64 + 1),
            Unit::Items("steps"),
            data.opts.quiet,
        );
        for f in archives {
            steps.println(&format!("extracting {}", f.name));
            extract::extract(
                &dir.file(&f.name),
                &dir.extracted(&f.name),
                &data.opts.limits,
            )
            .inspect_err(|_| steps.abandon())?;
            steps.inc(1);
        }
        steps.println("indexing");
        let progress = DownloadProgress::new(data.opts.quiet, 0);
        let ctx = BuildContext {
            dataset: n,
            dir: &dir,
            manifest: m,
            source: data.opts.source.as_deref(),
            progress: &progress,
            include_optional: data.opts.include_optional,
        };
        let splits = build(&ctx).inspect_err(|_| steps.abandon())?;
        written.extend(publish_index(&dir, &splits)?);
        steps.inc(1);
        steps.finish();
    }
    Ok(written)
}

#[derive(Serialize)]
struct BuiltMarker {
    splits: Vec<(String, usize)>,
    contracam: &'static str,
    built_at_unix: u64,
}

/// Write all split files into `index.tmp/`, then swap it in as `index/` with its BUILT.json marker.
fn publish_index(dir: &DatasetDir, splits: &[SplitIndex]) -> Result<Vec<PathBuf>> {
    let final_dir = dir.index_dir();
    let tmp = dir.root.join("index.tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).at(&tmp)?;
    }
    for s in splits {
        s.write(&tmp)?;
    }
    let marker = BuiltMarker {
        splits: splits
            .iter()
            .map(|s| (s.header.split.clone(), s.samples.len()))
            .collect(),
        contracam: env!("CARGO_PKG_VERSION"),
        built_at_unix: store::now_unix(),
    };
    store::write_json_atomic(&tmp.join("BUILT.json"), &marker)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).at(&final_dir)?;
    }
    std::fs::rename(&tmp, &final_dir).at(&final_dir)?;
    Ok(splits
        .iter()
        .map(|s| final_dir.join(format!("{}.jsonl", s.header.split)))
        .collect())
}

/// Convenience for tests and callers: the index files of a built dataset.
pub fn index_path(data_dir: &Path, dataset: &str, split: &str) -> PathBuf {
    DatasetDir::new(data_dir, dataset)
        .index_dir()
        .join(format!("{split}.jsonl"))
}
