//! Graph suites: a TOML file that declares datasets and a graph of stage instances referring to each other
//! by name, with paper cells bound to stage metrics. This module reads and validates one (no running):
//!
//! ```toml
//! name = "table4"
//! version = 1
//! [datasets.coco_train]
//! manifest = "coco2017"          # a built-in manifest name; the split comes from `data build`
//! split = "train"
//! [datasets.scenes]
//! synth = { form = "scenes", split = "train", count = 512 }   # as `suite::dataset::SynthDataset`;
//!                                # without `seed` the data follows the run seed, with one it is fixed
//! [stages.vanilla]
//! kind = "pretrain"
//! inputs = { data = "datasets.coco_train" }
//! params = { method = "moco", arch = "resnet50", epochs = 800 }
//! [stages.lineval]
//! kind = "linear-eval"
//! inputs = { model = "stages.vanilla.model", train = "datasets.coco_train", test = "datasets.coco_train" }
//! [[bind]]
//! table = 4
//! row = "MoCov2 / ResNet-50 / -"
//! column = "COCO-Crop"
//! metric = "stages.lineval.accuracy"
//! ```
//!
//! Every error names the file and the key path (`stages.lineval.inputs.model`). Implemented kinds parse
//! their `params` strictly with the kind's typed parameters; planned kinds are accepted (their params are
//! kept as written) and listed in [`GraphSuite::missing_kinds`].
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::config::{is_safe_name, SAFE_NAME_RULE};
use super::dataset::{DatasetSpec, IndexDataset, SynthDataset, SynthForm};
use super::golden::paper::{PaperCell, PaperGoldens};
use super::registry::{KindRef, Registry};
use super::stage::{ArtefactKind, ResolvedParams};
use crate::data::synth::SynthConfig;

/// A graph suite refused: the file, the key path inside it, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("cannot read {path}: {msg}")]
    Read { path: PathBuf, msg: String },
    #[error("{path}: {key}: {msg}")]
    Invalid {
        path: PathBuf,
        key: String,
        msg: String,
    },
    #[error("{path}: no golden/paper directory above it or the working directory (the paper cells `[[bind]]` names)")]
    NoPaperGoldens { path: PathBuf },
    #[error(transparent)]
    PaperGoldens(#[from] super::golden::paper::PaperGoldenError),
}

impl GraphError {
    /// The key path the error is about (empty for a read error).
    pub fn key(&self) -> &str {
        match self {
            GraphError::Invalid { key, .. } => key,
            _ => "",
        }
    }
}

// ---- the file as written -------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    name: String,
    version: u32,
    #[serde(default)]
    description: Option<String>,
    /// The golden `suite run` checks unless `--golden`/`--no-golden` says otherwise, relative to this file.
    #[serde(default)]
    golden: Option<PathBuf>,
    /// Run seeds of every stage that does not set its own.
    #[serde(default)]
    seeds: Option<Vec<u64>>,
    #[serde(default)]
    datasets: BTreeMap<String, DatasetDecl>,
    stages: BTreeMap<String, StageDecl>,
    #[serde(default)]
    bind: Vec<BindDecl>,
    /// Reduced scales of the same experiment (`[profiles.ci]`), applied by [`apply_profile`].
    #[serde(default)]
    profiles: BTreeMap<String, super::profile::ProfileDecl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetDecl {
    manifest: Option<String>,
    split: Option<String>,
    synth: Option<SynthDecl>,
    /// A built split: only its first `limit` samples (see [`IndexDataset::limit`]).
    #[serde(default)]
    limit: Option<usize>,
}

/// `synth = {...}` as written: [`SynthDataset`] whose `seed` may be left out, and then follows the run seed
/// (each seed of a multi-seed run generates its own data, as the smoke pipeline does per seed).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SynthDecl {
    form: SynthForm,
    split: String,
    count: usize,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    synth: SynthConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageDecl {
    kind: String,
    #[serde(default)]
    inputs: BTreeMap<String, String>,
    #[serde(default)]
    params: Option<toml::Table>,
    #[serde(default)]
    seeds: Option<Vec<u64>>,
    #[serde(default)]
    about: Option<String>,
    /// What a scheduler allots the stage's job (`suite run --executor slurm`); not part of its fingerprint.
    #[serde(default)]
    resources: Option<StageResources>,
}

/// `[stages.X.resources]`: what one job of the stage asks a scheduler for. Unset fields take the defaults
/// of [`StageResources::default`] (small: one CPU, 2 GiB, one hour, no GPU).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StageResources {
    pub cpus: std::num::NonZeroU32,
    pub mem_mb: std::num::NonZeroU32,
    pub time_min: std::num::NonZeroU32,
    pub gpus: u32,
    /// Processes of the job (`srun --ntasks`), each a rank of one data-parallel run; unset: one per GPU
    /// (`gpus`), else one.
    pub tasks: Option<std::num::NonZeroU32>,
}

impl StageResources {
    /// How many tasks the job runs: `tasks`, else one per GPU, at least one.
    pub fn ntasks(&self) -> u32 {
        self.tasks.map_or(self.gpus.max(1), |t| t.get())
    }
}

impl Default for StageResources {
    fn default() -> Self {
        let n = |v: u32| std::num::NonZeroU32::new(v).unwrap_or(std::num::NonZeroU32::MIN);
        StageResources {
            cpus: n(1),
            mem_mb: n(2048),
            time_min: n(60),
            gpus: 0,
            tasks: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BindDecl {
    table: u32,
    row: String,
    column: String,
    metric: String,
}

// ---- the validated suite -------------------------------------------------------------------------------

/// What an input slot is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputRef {
    /// `datasets.<id>`
    Dataset(String),
    /// `stages.<id>.<output>`
    Stage { stage: String, output: String },
}

impl std::fmt::Display for InputRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputRef::Dataset(d) => write!(f, "datasets.{d}"),
            InputRef::Stage { stage, output } => write!(f, "stages.{stage}.{output}"),
        }
    }
}

/// A stage instance after validation.
#[derive(Debug, Clone)]
pub struct GraphStage {
    pub kind: String,
    /// Whether the kind is implemented (else planned: the suite validates but cannot run yet).
    pub implemented: bool,
    pub inputs: BTreeMap<String, InputRef>,
    /// Implemented kinds: the canonical resolved parameters (defaults filled in). Planned kinds: the
    /// parameters as written, converted to JSON.
    pub params: ResolvedParams,
    pub seeds: Vec<u64>,
    pub about: Option<String>,
    pub resources: StageResources,
}

/// A paper cell bound to a stage metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Bind {
    pub table: u32,
    pub row: String,
    pub column: String,
    pub stage: String,
    pub metric: String,
}

/// A graph suite that passed validation.
#[derive(Debug, Clone)]
pub struct GraphSuite {
    pub path: PathBuf,
    pub name: String,
    pub version: u32,
    pub description: Option<String>,
    /// The suite's own golden (`golden = "…"`, resolved against the file's folder).
    pub golden: Option<PathBuf>,
    /// The datasets as declared; a synthetic one in `run_seeded` holds seed 0 here and is generated at the
    /// run seed (see [`GraphSuite::datasets_at`]).
    pub datasets: BTreeMap<String, DatasetSpec>,
    /// Synthetic datasets without a `seed`: their data seed is the run seed.
    pub run_seeded: BTreeSet<String>,
    pub stages: BTreeMap<String, GraphStage>,
    /// Stage names in an order where every stage comes after the stages it reads from (ties by name).
    pub order: Vec<String>,
    pub binds: Vec<Bind>,
    /// The profile applied (`paper` is the file as written).
    pub profile: String,
    /// The `--set KEY=VALUE` overrides applied after the profile, as given.
    pub sets: Vec<String>,
    /// Every profile the file defines, `paper` first.
    pub profiles: Vec<String>,
    /// The suite as run: the file with the profile and the `--set` overrides applied, without `[profiles]`.
    pub config: toml::Table,
}

/// What validation checks names against.
pub struct GraphContext<'a> {
    pub registry: &'a Registry,
    /// Paper goldens that `[[bind]]` entries must name cells of.
    pub paper: &'a PaperGoldens,
    /// Dataset manifest names a `manifest = ...` may use (None: not checked).
    pub manifests: Option<BTreeSet<String>>,
}

impl<'a> GraphContext<'a> {
    /// Checks manifest names against the manifests compiled into contracam.
    pub fn with_builtin_manifests(registry: &'a Registry, paper: &'a PaperGoldens) -> Self {
        let manifests = crate::data::source::manifest::Registry::builtin()
            .ok()
            .map(|r| r.datasets.keys().cloned().collect());
        GraphContext {
            registry,
            paper,
            manifests,
        }
    }
}

/// The profile a suite file describes as written: the paper's scale.
pub const PAPER_PROFILE: &str = "paper";

/// Which variant of a suite file to load: a profile (None: `paper`) and `--set KEY=VALUE` overrides applied
/// after it, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub profile: Option<String>,
    pub sets: Vec<String>,
}

impl Selection {
    pub fn profile(name: &str) -> Self {
        Selection {
            profile: Some(name.into()),
            sets: Vec::new(),
        }
    }
}

/// "profile 'ci'", "profile 'ci', --set a=1": what was applied, for messages.
fn describe_selection(profile: &str, sets: &[String]) -> String {
    let mut s = format!("profile '{profile}'");
    for set in sets {
        s.push_str(&format!(", --set {set}"));
    }
    s
}

/// The default seeds of a stage when neither the stage nor the suite sets any.
pub const DEFAULT_SEEDS: &[u64] = &[0];

/// Whether a suite file is a graph suite (has a `[stages]` table) rather than the hard-coded smoke form.
pub fn is_graph_suite(text: &str) -> bool {
    text.parse::<toml::Table>()
        .map(|t| t.contains_key("stages"))
        .unwrap_or(false)
}

/// Validates a graph suite file against the built-in stage kinds and manifests and the paper goldens of the
/// repository it lives in (see [`super::golden::paper::find_dir`]), else those of the working directory.
pub fn validate_file(path: &Path) -> Result<GraphSuite, GraphError> {
    validate_file_with(path, &Selection::default())
}

/// [`validate_file`] at a profile and with `--set` overrides.
pub fn validate_file_with(path: &Path, sel: &Selection) -> Result<GraphSuite, GraphError> {
    let dir = super::golden::paper::find_dir(path)
        .or_else(|| super::golden::paper::find_dir(Path::new(".")))
        .ok_or_else(|| GraphError::NoPaperGoldens { path: path.into() })?;
    let paper = PaperGoldens::load_dir(&dir)?;
    let registry = Registry::builtin();
    GraphSuite::load_with(
        path,
        &GraphContext::with_builtin_manifests(&registry, &paper),
        sel,
    )
}

/// [`validate_file`] at every profile the file defines (`paper` first): each applied, then validated.
pub fn validate_file_all_profiles(path: &Path) -> Result<Vec<GraphSuite>, GraphError> {
    let paper = validate_file(path)?;
    let mut out = Vec::new();
    for name in paper.profiles.iter().skip(1) {
        out.push(validate_file_with(path, &Selection::profile(name))?);
    }
    out.insert(0, paper);
    Ok(out)
}

impl GraphSuite {
    /// Reads and validates a graph suite file.
    pub fn load(path: &Path, ctx: &GraphContext) -> Result<Self, GraphError> {
        Self::load_with(path, ctx, &Selection::default())
    }

    /// Reads and validates a graph suite file at a profile and with `--set` overrides.
    pub fn load_with(path: &Path, ctx: &GraphContext, sel: &Selection) -> Result<Self, GraphError> {
        let text = std::fs::read_to_string(path).map_err(|e| GraphError::Read {
            path: path.into(),
            msg: e.to_string(),
        })?;
        Self::parse_with(&text, path, ctx, sel)
    }

    /// Validates the text of a graph suite; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path, ctx: &GraphContext) -> Result<Self, GraphError> {
        Self::parse_with(text, path, ctx, &Selection::default())
    }

    /// Validates the text of a graph suite at a profile and with `--set` overrides: the file as written is
    /// checked first (so its own errors point into it), then the profile and the overrides are applied to
    /// its table and the result is validated again.
    pub fn parse_with(
        text: &str,
        path: &Path,
        ctx: &GraphContext,
        sel: &Selection,
    ) -> Result<Self, GraphError> {
        let v = Validator { path };
        let de = toml::Deserializer::parse(text).map_err(|e| v.err("", e.to_string()))?;
        let file: SuiteFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            v.err(if key == "." { "" } else { &key }, e.inner().to_string())
        })?;
        let mut profiles = vec![PAPER_PROFILE.to_string()];
        profiles.extend(file.profiles.keys().cloned());
        let profile = sel.profile.as_deref().unwrap_or(PAPER_PROFILE).to_string();
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| v.err("", e.to_string()))?;
        table.remove("profiles");
        if file.profiles.contains_key(PAPER_PROFILE) {
            return Err(v.err(
                "profiles.paper",
                "the file as written is the `paper` profile; it cannot be redefined",
            ));
        }
        for name in file.profiles.keys() {
            if !is_safe_name(name) {
                return Err(v.err(
                    &format!("profiles.{name}"),
                    format!("profile name {name:?} {SAFE_NAME_RULE}"),
                ));
            }
        }
        if profile == PAPER_PROFILE && sel.sets.is_empty() {
            let mut suite = v.suite(file, ctx)?;
            suite.profiles = profiles;
            suite.config = table;
            return Ok(suite);
        }
        if profile != PAPER_PROFILE {
            let Some(decl) = file.profiles.get(&profile) else {
                return Err(v.err(
                    "profiles",
                    format!(
                        "no profile '{profile}'; this file has profiles: {}",
                        profiles.join(", ")
                    ),
                ));
            };
            super::profile::apply_profile(&mut table, &profile, decl)
                .map_err(|(key, msg)| v.err(&key, msg))?;
        }
        for set in &sel.sets {
            super::profile::apply_set(&mut table, set).map_err(|(key, msg)| v.err(&key, msg))?;
        }
        let applied = describe_selection(&profile, &sel.sets);
        let in_context = |e: GraphError| match e {
            GraphError::Invalid { path, key, msg } => GraphError::Invalid {
                path,
                key,
                msg: format!("{msg} ({applied})"),
            },
            other => other,
        };
        let file: SuiteFile = serde_path_to_error::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| {
            let key = e.path().to_string();
            in_context(v.err(if key == "." { "" } else { &key }, e.inner().to_string()))
        })?;
        let mut suite = v.suite(file, ctx).map_err(in_context)?;
        suite.profile = profile;
        suite.sets = sel.sets.clone();
        suite.profiles = profiles;
        suite.config = table;
        Ok(suite)
    }

    /// The datasets of a run at `run_seed`: a synthetic dataset without its own `seed` is generated at it.
    pub fn datasets_at(&self, run_seed: u64) -> BTreeMap<String, DatasetSpec> {
        let mut out = self.datasets.clone();
        for id in &self.run_seeded {
            if let Some(DatasetSpec::Synth(s)) = out.get_mut(id) {
                s.seed = run_seed;
            }
        }
        out
    }

    /// Planned (not implemented) kinds the suite uses, sorted and unique: what must land before it runs.
    pub fn missing_kinds(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self
            .stages
            .values()
            .filter(|s| !s.implemented)
            .map(|s| s.kind.as_str())
            .collect();
        set.into_iter().map(String::from).collect()
    }

    /// The bind of a paper cell, if any.
    pub fn bind_of(&self, table: u32, row: &str, column: &str) -> Option<&Bind> {
        self.binds
            .iter()
            .find(|b| b.table == table && b.row == row && b.column == column)
    }

    /// Cells of paper table `table` that no `[[bind]]` of this suite names.
    pub fn unbound_cells<'p>(&self, paper: &'p PaperGoldens, table: u32) -> Vec<&'p PaperCell> {
        paper
            .table(table)
            .map(|t| {
                t.cells
                    .iter()
                    .filter(|c| self.bind_of(table, &c.row, &c.column).is_none())
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Validator<'p> {
    path: &'p Path,
}

impl Validator<'_> {
    fn err(&self, key: &str, msg: impl Into<String>) -> GraphError {
        GraphError::Invalid {
            path: self.path.into(),
            key: if key.is_empty() {
                "(top level)".into()
            } else {
                key.into()
            },
            msg: msg.into(),
        }
    }

    fn suite(&self, file: SuiteFile, ctx: &GraphContext) -> Result<GraphSuite, GraphError> {
        if !is_safe_name(&file.name) {
            return Err(self.err("name", format!("{:?} {SAFE_NAME_RULE}", file.name)));
        }
        if file.version == 0 {
            return Err(self.err("version", "must be at least 1"));
        }
        let default_seeds = match &file.seeds {
            Some(s) => {
                self.seeds("seeds", s)?;
                s.clone()
            }
            None => DEFAULT_SEEDS.to_vec(),
        };
        let mut datasets = BTreeMap::new();
        for (id, d) in &file.datasets {
            datasets.insert(id.clone(), self.dataset(id, d, ctx)?);
        }
        let run_seeded = file
            .datasets
            .iter()
            .filter(|(_, d)| d.synth.as_ref().is_some_and(|s| s.seed.is_none()))
            .map(|(id, _)| id.clone())
            .collect();
        if file.stages.is_empty() {
            return Err(self.err("stages", "a graph suite needs at least one stage"));
        }
        let mut stages = BTreeMap::new();
        for (id, s) in &file.stages {
            let key = format!("stages.{id}");
            if !is_safe_name(id) {
                return Err(self.err(&key, format!("stage name {id:?} {SAFE_NAME_RULE}")));
            }
            let kind = ctx.registry.get(&s.kind).ok_or_else(|| {
                self.err(
                    &format!("{key}.kind"),
                    format!(
                        "unknown stage kind '{}'; known kinds: {}",
                        s.kind,
                        ctx.registry.names().join(", ")
                    ),
                )
            })?;
            let params = self.params(&key, kind, s.params.clone())?;
            let seeds = match &s.seeds {
                Some(v) => {
                    self.seeds(&format!("{key}.seeds"), v)?;
                    v.clone()
                }
                None => default_seeds.clone(),
            };
            stages.insert(
                id.clone(),
                GraphStage {
                    kind: s.kind.clone(),
                    implemented: kind.implemented().is_some(),
                    inputs: BTreeMap::new(),
                    params,
                    seeds,
                    about: s.about.clone(),
                    resources: s.resources.clone().unwrap_or_default(),
                },
            );
        }
        // Inputs once every stage's kind is known, so references can be checked against outputs.
        for (id, s) in &file.stages {
            let inputs = self.inputs(id, s, &file, ctx)?;
            if let Some(st) = stages.get_mut(id) {
                st.inputs = inputs;
            }
        }
        let order = self.order(&stages)?;
        let binds = self.binds(&file.bind, &stages, ctx)?;
        Ok(GraphSuite {
            path: self.path.into(),
            name: file.name,
            version: file.version,
            description: file.description,
            golden: file
                .golden
                .map(|g| self.path.parent().unwrap_or_else(|| Path::new(".")).join(g)),
            datasets,
            run_seeded,
            stages,
            order,
            binds,
            profile: PAPER_PROFILE.into(),
            sets: Vec::new(),
            profiles: vec![PAPER_PROFILE.into()],
            config: toml::Table::new(),
        })
    }

    fn seeds(&self, key: &str, seeds: &[u64]) -> Result<(), GraphError> {
        if seeds.is_empty() {
            return Err(self.err(key, "needs at least one seed where given"));
        }
        let mut seen = BTreeSet::new();
        for s in seeds {
            if !seen.insert(s) {
                return Err(self.err(key, format!("seed {s} is listed twice")));
            }
        }
        Ok(())
    }

    fn dataset(
        &self,
        id: &str,
        d: &DatasetDecl,
        ctx: &GraphContext,
    ) -> Result<DatasetSpec, GraphError> {
        let key = format!("datasets.{id}");
        if !is_safe_name(id) {
            return Err(self.err(&key, format!("dataset name {id:?} {SAFE_NAME_RULE}")));
        }
        let spec =
            match (&d.manifest, &d.split, &d.synth) {
                (Some(m), Some(split), None) => {
                    if let Some(known) = &ctx.manifests {
                        if !known.contains(m) {
                            return Err(self.err(
                                &format!("{key}.manifest"),
                                format!(
                                    "no dataset manifest named '{m}'; known: {}",
                                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                                ),
                            ));
                        }
                    }
                    DatasetSpec::Index(IndexDataset {
                        name: m.clone(),
                        split: split.clone(),
                        limit: d.limit,
                    })
                }
                (None, None, Some(_)) if d.limit.is_some() => return Err(self.err(
                    &format!("{key}.limit"),
                    "applies to a built split; a synthetic set sets its size with `synth.count`",
                )),
                (None, None, Some(s)) => DatasetSpec::Synth(SynthDataset {
                    form: s.form,
                    split: s.split.clone(),
                    count: s.count,
                    seed: s.seed.unwrap_or(0),
                    synth: s.synth.clone(),
                }),
                (Some(_), None, None) => {
                    return Err(
                        self.err(&format!("{key}.split"), "a manifest dataset needs a split")
                    )
                }
                (None, Some(_), None) => {
                    return Err(self.err(
                        &format!("{key}.manifest"),
                        "a split needs the manifest (dataset name) it belongs to",
                    ))
                }
                (None, None, None) => return Err(self.err(
                    &key,
                    "declare either `manifest` and `split` (a built dataset) or `synth = {...}`",
                )),
                _ => {
                    return Err(self.err(
                        &format!("{key}.synth"),
                        "a dataset is either a manifest split or synthetic, not both",
                    ))
                }
            };
        spec.validate().map_err(|e| {
            let sub = match &spec {
                DatasetSpec::Synth(_) => format!("{key}.synth.{}", e.key),
                DatasetSpec::Index(_) if e.key == "name" => format!("{key}.manifest"),
                DatasetSpec::Index(_) => format!("{key}.{}", e.key),
            };
            self.err(&sub, e.msg)
        })?;
        Ok(spec)
    }

    fn params(
        &self,
        key: &str,
        kind: KindRef,
        params: Option<toml::Table>,
    ) -> Result<ResolvedParams, GraphError> {
        let table = params.unwrap_or_default();
        match kind.implemented() {
            Some(stage) => stage.parse(toml::Value::Table(table)).map_err(|e| {
                let k = if e.key.is_empty() {
                    format!("{key}.params")
                } else {
                    format!("{key}.params.{}", e.key)
                };
                self.err(&k, e.msg)
            }),
            None => serde_json::to_value(&table)
                .map_err(|e| self.err(&format!("{key}.params"), e.to_string())),
        }
    }

    fn inputs(
        &self,
        id: &str,
        s: &StageDecl,
        file: &SuiteFile,
        ctx: &GraphContext,
    ) -> Result<BTreeMap<String, InputRef>, GraphError> {
        let key = format!("stages.{id}.inputs");
        let Some(kind) = ctx.registry.get(&s.kind) else {
            return Err(self.err(&format!("stages.{id}.kind"), "unknown stage kind"));
        };
        let slots = kind.inputs();
        let slot_names = || {
            if slots.is_empty() {
                "none".to_string()
            } else {
                slots.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            }
        };
        let mut out = BTreeMap::new();
        for (slot_name, reference) in &s.inputs {
            let k = format!("{key}.{slot_name}");
            let slot = slots.iter().find(|x| x.name == slot_name).ok_or_else(|| {
                self.err(
                    &k,
                    format!(
                        "stage kind '{}' has no input slot '{slot_name}'; its inputs: {}",
                        s.kind,
                        slot_names()
                    ),
                )
            })?;
            let (r, got) = self.reference(&k, reference, file, ctx)?;
            if got != slot.kind {
                return Err(self.err(
                    &k,
                    format!(
                        "'{reference}' is a {}, but input '{slot_name}' of kind '{}' takes a {}",
                        got.name(),
                        s.kind,
                        slot.kind.name()
                    ),
                ));
            }
            out.insert(slot_name.clone(), r);
        }
        for slot in slots.iter().filter(|x| !x.optional) {
            if !out.contains_key(slot.name) {
                return Err(self.err(
                    &key,
                    format!(
                        "missing required input '{}' ({}) of stage kind '{}'",
                        slot.name,
                        slot.kind.name(),
                        s.kind
                    ),
                ));
            }
        }
        Ok(out)
    }

    /// Resolves `datasets.<id>` or `stages.<id>.<output>` to what it names and its artefact kind.
    fn reference(
        &self,
        key: &str,
        reference: &str,
        file: &SuiteFile,
        ctx: &GraphContext,
    ) -> Result<(InputRef, ArtefactKind), GraphError> {
        let parts: Vec<&str> = reference.split('.').collect();
        match parts.as_slice() {
            ["datasets", d] => {
                if !file.datasets.contains_key(*d) {
                    return Err(self.err(
                        key,
                        format!(
                            "'{reference}' refers to no declared dataset; declared: {}",
                            list(file.datasets.keys())
                        ),
                    ));
                }
                Ok((InputRef::Dataset((*d).into()), ArtefactKind::Dataset))
            }
            ["stages", st, output] => {
                let Some(decl) = file.stages.get(*st) else {
                    return Err(self.err(
                        key,
                        format!(
                            "'{reference}' refers to no declared stage '{st}'; declared: {}",
                            list(file.stages.keys())
                        ),
                    ));
                };
                let kind = ctx.registry.get(&decl.kind).ok_or_else(|| {
                    self.err(
                        &format!("stages.{st}.kind"),
                        format!("unknown stage kind '{}'", decl.kind),
                    )
                })?;
                let slot = kind
                    .outputs()
                    .iter()
                    .find(|o| o.name == *output)
                    .ok_or_else(|| {
                        self.err(
                            key,
                            format!(
                                "'{reference}': stage '{st}' (kind '{}') has no output '{output}'; its outputs: {}",
                                decl.kind,
                                list(kind.outputs().iter().map(|o| o.name))
                            ),
                        )
                    })?;
                Ok((
                    InputRef::Stage {
                        stage: (*st).into(),
                        output: (*output).into(),
                    },
                    slot.kind,
                ))
            }
            _ => Err(self.err(
                key,
                format!(
                    "'{reference}' is not a reference; write \"datasets.<name>\" or \"stages.<name>.<output>\""
                ),
            )),
        }
    }

    /// Kahn's algorithm over stage → stage edges, smallest name first among the ready ones; a cycle is
    /// refused with its stages in order.
    fn order(&self, stages: &BTreeMap<String, GraphStage>) -> Result<Vec<String>, GraphError> {
        let deps = |s: &GraphStage| -> BTreeSet<String> {
            s.inputs
                .values()
                .filter_map(|r| match r {
                    InputRef::Stage { stage, .. } => Some(stage.clone()),
                    InputRef::Dataset(_) => None,
                })
                .collect()
        };
        let mut waiting: BTreeMap<&str, BTreeSet<String>> =
            stages.iter().map(|(k, s)| (k.as_str(), deps(s))).collect();
        let mut order = Vec::new();
        loop {
            let ready: Option<&str> = waiting.iter().find(|(_, d)| d.is_empty()).map(|(k, _)| *k);
            let Some(next) = ready else { break };
            waiting.remove(next);
            for d in waiting.values_mut() {
                d.remove(next);
            }
            order.push(next.to_string());
        }
        if waiting.is_empty() {
            return Ok(order);
        }
        // Every waiting stage depends on another waiting stage: walk from the first until a stage repeats.
        let mut path: Vec<&str> = Vec::new();
        let mut at = *waiting.keys().next().unwrap_or(&"");
        while !path.contains(&at) {
            path.push(at);
            at = waiting
                .get(at)
                .and_then(|d| d.iter().find(|x| waiting.contains_key(x.as_str())))
                .map(|s| s.as_str())
                .unwrap_or(at);
        }
        let start = path.iter().position(|p| *p == at).unwrap_or(0);
        // Edges point from a stage to what it reads; print in the direction data flows.
        let mut cycle: Vec<&str> = path[start..].to_vec();
        cycle.reverse();
        cycle.push(cycle[0]);
        Err(self.err(
            &format!("stages.{}.inputs", cycle[0]),
            format!("the stages form a cycle: {}", cycle.join(" → ")),
        ))
    }

    fn binds(
        &self,
        binds: &[BindDecl],
        stages: &BTreeMap<String, GraphStage>,
        ctx: &GraphContext,
    ) -> Result<Vec<Bind>, GraphError> {
        let mut out: Vec<Bind> = Vec::new();
        for (i, b) in binds.iter().enumerate() {
            let key = format!("bind[{i}]");
            let Some(table) = ctx.paper.table(b.table) else {
                return Err(self.err(
                    &format!("{key}.table"),
                    format!(
                        "no paper table {} (golden/paper has tables {})",
                        b.table,
                        list(ctx.paper.tables.iter().map(|t| t.table))
                    ),
                ));
            };
            if table.cell(&b.row, &b.column).is_none() {
                return Err(self.err(
                    &key,
                    format!(
                        "table {} has no cell with row '{}' and column '{}' ({})",
                        b.table,
                        b.row,
                        b.column,
                        table.path.display()
                    ),
                ));
            }
            let mk = format!("{key}.metric");
            let parts: Vec<&str> = b.metric.split('.').collect();
            let ["stages", st, metric] = parts.as_slice() else {
                return Err(self.err(
                    &mk,
                    format!("'{}' is not \"stages.<name>.<metric>\"", b.metric),
                ));
            };
            let Some(stage) = stages.get(*st) else {
                return Err(self.err(
                    &mk,
                    format!(
                        "'{}' refers to no declared stage '{st}'; declared: {}",
                        b.metric,
                        list(stages.keys())
                    ),
                ));
            };
            let kind = ctx
                .registry
                .get(&stage.kind)
                .ok_or_else(|| self.err(&mk, "unknown stage kind"))?;
            if kind.metric(metric).is_none() {
                return Err(self.err(
                    &mk,
                    format!(
                        "stage '{st}' (kind '{}') emits no metric '{metric}'; its metrics: {}",
                        stage.kind,
                        list(kind.metrics().iter().map(|m| m.name))
                    ),
                ));
            }
            if let Some(j) = binds[..i]
                .iter()
                .position(|p| p.table == b.table && p.row == b.row && p.column == b.column)
            {
                return Err(self.err(
                    &key,
                    format!(
                        "table {} row '{}' column '{}' is already bound by bind[{j}]",
                        b.table, b.row, b.column
                    ),
                ));
            }
            out.push(Bind {
                table: b.table,
                row: b.row.clone(),
                column: b.column.clone(),
                stage: (*st).into(),
                metric: (*metric).into(),
            });
        }
        Ok(out)
    }
}

fn list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = items.into_iter().map(|x| x.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
