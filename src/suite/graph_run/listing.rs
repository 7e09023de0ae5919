//! `suite ls`: every suite file under a folder, its form (the hard-coded smoke form or a graph), its stages,
//! the datasets it needs and whether each is built, and the stage kinds it still misses.
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::suite::dataset::{DatasetHandle, DatasetSpec};
use crate::suite::graph::{self, GraphSuite};
use crate::suite::registry::Registry;

/// A dataset a suite needs.
#[derive(Debug, Clone, Serialize)]
pub struct NeededDataset {
    /// The suite's name for it (`datasets.<id>`).
    pub id: String,
    /// `manifest/split` or `synth <form> ×count`.
    pub source: String,
    /// Synthetic data is generated, so always built.
    pub built: bool,
}

/// What `suite ls` shows of one file.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteListing {
    pub path: PathBuf,
    /// `smoke`, `graph`, or `invalid` (then `problem` says why).
    pub form: &'static str,
    pub name: String,
    pub version: u32,
    pub stages: Vec<String>,
    pub datasets: Vec<NeededDataset>,
    /// Kinds not implemented yet, each with the stages that use it.
    pub missing_kinds: Vec<(String, Vec<String>)>,
    pub problem: Option<String>,
}

/// Every `*.toml` under `dir` (recursively, sorted by path) as a suite. Files that are neither form, or do
/// not validate, are listed as `invalid` with the reason.
pub fn list(dir: &Path, data_dir: &Path) -> Result<Vec<SuiteListing>, std::io::Error> {
    if !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is not a folder of suite files", dir.display()),
        ));
    }
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let registry = Registry::builtin();
    Ok(files
        .iter()
        .map(|p| listing(p, data_dir, &registry))
        .collect())
}

fn invalid(path: &Path, problem: String) -> SuiteListing {
    SuiteListing {
        path: path.into(),
        form: "invalid",
        name: String::new(),
        version: 0,
        stages: Vec::new(),
        datasets: Vec::new(),
        missing_kinds: Vec::new(),
        problem: Some(problem),
    }
}

fn listing(path: &Path, data_dir: &Path, registry: &Registry) -> SuiteListing {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return invalid(path, format!("cannot read: {e}")),
    };
    if graph::is_graph_suite(&text) {
        match graph::validate_file(path) {
            Ok(g) => graph_listing(&g, data_dir, registry),
            Err(e) => invalid(path, e.to_string()),
        }
    } else {
        match crate::suite::config::load(path) {
            Ok(s) => SuiteListing {
                path: path.into(),
                form: "smoke",
                name: s.config.name.clone(),
                version: s.config.version,
                stages: crate::suite::plan::stages(&s.config, tch::Device::Cpu, None)
                    .iter()
                    .map(|s| s.name.to_string())
                    .collect(),
                datasets: vec![NeededDataset {
                    id: "(built in)".into(),
                    source: "synthetic scenes and crops, generated from the suite's seed".into(),
                    built: true,
                }],
                missing_kinds: Vec::new(),
                problem: None,
            },
            Err(e) => invalid(path, e.to_string()),
        }
    }
}

fn graph_listing(g: &GraphSuite, data_dir: &Path, registry: &Registry) -> SuiteListing {
    let datasets = g
        .datasets
        .iter()
        .map(|(id, spec)| NeededDataset {
            id: id.clone(),
            source: match spec {
                DatasetSpec::Index(i) => format!("{}/{}", i.name, i.split),
                DatasetSpec::Synth(s) => format!(
                    "synth {} ×{}",
                    serde_json::to_value(s.form)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    s.count
                ),
            },
            built: DatasetHandle::is_built(spec, data_dir),
        })
        .collect();
    SuiteListing {
        path: g.path.clone(),
        form: "graph",
        name: g.name.clone(),
        version: g.version,
        stages: g.order.clone(),
        datasets,
        missing_kinds: super::missing_kinds(g, registry).into_iter().collect(),
        problem: None,
    }
}

/// The listing as a person reads it.
pub fn text(items: &[SuiteListing], data_dir: &Path) -> String {
    let mut s = format!("datasets checked under {}\n", data_dir.display());
    for it in items {
        s.push_str(&format!("\n{}  [{}]", it.path.display(), it.form));
        if let Some(p) = &it.problem {
            s.push_str(&format!("\n  problem: {p}\n"));
            continue;
        }
        s.push_str(&format!("  {} v{}\n", it.name, it.version));
        s.push_str(&format!(
            "  stages ({}): {}\n",
            it.stages.len(),
            it.stages.join(", ")
        ));
        s.push_str("  datasets:");
        if it.datasets.is_empty() {
            s.push_str(" none\n");
        } else {
            s.push('\n');
        }
        for d in &it.datasets {
            s.push_str(&format!(
                "    {:<24} {:<32} {}\n",
                d.id,
                d.source,
                if d.built { "built" } else { "NOT BUILT" }
            ));
        }
        if it.missing_kinds.is_empty() {
            s.push_str("  missing kinds: none\n");
        } else {
            let m: Vec<String> = it
                .missing_kinds
                .iter()
                .map(|(k, st)| format!("{k} ({})", st.join(", ")))
                .collect();
            s.push_str(&format!("  missing kinds: {}\n", m.join(", ")));
        }
    }
    s
}
