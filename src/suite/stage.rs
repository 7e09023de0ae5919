//! A stage kind: typed parameters, declared inputs and outputs, the metrics it emits, and a `run` that calls
//! library functions of the lower layers. A suite names stage *instances* (`[stages.vanilla] kind =
//! "pretrain"`); the engine resolves their inputs, fingerprints them, and runs them through the cache.
//!
//! # Adding a stage kind
//!
//! One file per kind under `src/suite/stages/`, registered in `stages::register_builtin`:
//!
//! ```
//! use contracam::suite::stage::*;
//! use serde::{Deserialize, Serialize};
//!
//! /// Counts the images of a dataset (an example; not registered).
//! pub struct CountImages;
//!
//! #[derive(Debug, Clone, Default, Serialize, Deserialize)]
//! #[serde(deny_unknown_fields, default)]
//! pub struct CountParams {
//!     /// Only count the first `limit` images (0: all).
//!     pub limit: usize,
//! }
//!
//! impl Stage for CountImages {
//!     type Params = CountParams;
//!     const KIND: &'static str = "count-images";
//!     // Bump when the outputs of the same parameters and inputs change meaning.
//!     const VERSION: u32 = 1;
//!     const INPUTS: &'static [Slot] = &[Slot::required("data", ArtefactKind::Dataset)];
//!     const OUTPUTS: &'static [Slot] =
//!         &[Slot::file("counts", ArtefactKind::Json, "counts.json")];
//!     const METRICS: &'static [MetricSpec] = &[MetricSpec {
//!         name: "images",
//!         unit: Unit::Count,
//!         direction: Direction::Neutral,
//!         about: "images in the dataset",
//!     }];
//!
//!     fn validate(p: &CountParams) -> Result<(), ParamError> {
//!         if p.limit > 1_000_000 {
//!             return Err(ParamError::new("limit", "must be at most 1000000"));
//!         }
//!         Ok(())
//!     }
//!
//!     fn run(p: &CountParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
//!         let data = ctx.dataset("data")?;
//!         let n = data.len()?;
//!         let n = if p.limit == 0 { n } else { n.min(p.limit) };
//!         ctx.write_json("counts", &serde_json::json!({ "images": n }))?;
//!         Ok(StageResult::default().metric("images", n as f64))
//!     }
//! }
//! ```
//!
//! Parameters are read from the suite's `[stages.NAME.params]` with `deny_unknown_fields`; a wrong key or
//! type is an error naming the suite file and the key path. Everything the stage's outputs depend on must be
//! in its parameters, its inputs, the run's seed, device class or precision policy: those make the
//! fingerprint, and a stage with the same fingerprint is never run twice. Write outputs only under
//! `ctx.output(slot)`: the cache checks that every declared output exists before it publishes the stage
//! directory atomically, and publishes nothing when `run` fails.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tch::Device;

use super::dataset::DatasetHandle;
use crate::util::progress::{Mode, Progress, Unit as ProgressUnit};

/// What an input or output of a stage is. Outputs are files or directories in the stage's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtefactKind {
    /// A dataset declared in the suite (synthetic or from a sample index); inputs only.
    Dataset,
    /// Model weights (safetensors with the model config in the metadata).
    ModelCheckpoint,
    /// Boxes per image (the official text format or the suite's JSON).
    BoxFile,
    /// A directory of binary masks (PNG), one per image.
    MasksDir,
    /// Soft (float) masks for BG-Mixup, the official `save_masks` layout.
    SoftMasks,
    /// Score maps (`.npy` per image, the wsolevaluation layout) or a CAM tensor file.
    ScoreMaps,
    /// Frozen-backbone features.
    Features,
    /// Any other JSON document.
    Json,
    /// A detectron2 pickle or other exported weights.
    Export,
}

impl ArtefactKind {
    pub fn name(self) -> &'static str {
        match self {
            ArtefactKind::Dataset => "dataset",
            ArtefactKind::ModelCheckpoint => "model-checkpoint",
            ArtefactKind::BoxFile => "box-file",
            ArtefactKind::MasksDir => "masks-dir",
            ArtefactKind::SoftMasks => "soft-masks",
            ArtefactKind::ScoreMaps => "score-maps",
            ArtefactKind::Features => "features",
            ArtefactKind::Json => "json",
            ArtefactKind::Export => "export",
        }
    }

    /// Whether an output of this kind is a directory (else a file).
    pub fn is_dir(self) -> bool {
        matches!(
            self,
            ArtefactKind::MasksDir | ArtefactKind::SoftMasks | ArtefactKind::ScoreMaps
        )
    }
}

/// A named input or output of a stage kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub name: &'static str,
    pub kind: ArtefactKind,
    /// Inputs only: the suite may leave it unbound.
    pub optional: bool,
    /// Outputs only: the file or directory name inside the stage directory.
    pub file: &'static str,
}

impl Slot {
    /// A required input.
    pub const fn required(name: &'static str, kind: ArtefactKind) -> Self {
        Slot {
            name,
            kind,
            optional: false,
            file: "",
        }
    }
    /// An input the suite may leave unbound (e.g. OA-Crop's boxes).
    pub const fn optional(name: &'static str, kind: ArtefactKind) -> Self {
        Slot {
            name,
            kind,
            optional: true,
            file: "",
        }
    }
    /// An output written as `file` in the stage directory.
    pub const fn file(name: &'static str, kind: ArtefactKind, file: &'static str) -> Self {
        Slot {
            name,
            kind,
            optional: false,
            file,
        }
    }
}

/// The unit of a metric, as printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    /// A fraction in [0, 1] (mIoU, box recall, accuracy as the suite stores it).
    Fraction,
    /// Percent, as the paper prints accuracies.
    Percent,
    /// A loss value.
    Loss,
    /// A count or a mean count.
    Count,
    /// Seconds.
    Seconds,
    /// Anything else; say what in `about`.
    Other,
}

/// Which way is better: what a one-sided "not worse" test and the report's arrows use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    HigherIsBetter,
    LowerIsBetter,
    /// A diagnostic without a better side (e.g. boxes per image).
    Neutral,
}

/// A metric a stage kind emits. Its id in a suite is `<stage instance>.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricSpec {
    pub name: &'static str,
    pub unit: Unit,
    pub direction: Direction,
    pub about: &'static str,
}

/// How the stage computes in floating point (training's own policy type); part of the fingerprint as its
/// name (`fp32`, `bf16-mixed`).
pub use crate::train::precision::Precision;

/// The class of device a stage ran on: results on one class are not reused on another.
pub fn device_class(device: Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Mps => "mps",
        Device::Vulkan => "vulkan",
    }
}

/// A parameter that fails its domain check; `key` is the path inside `params` (e.g. `augment.output_size`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {msg}")]
pub struct ParamError {
    pub key: String,
    pub msg: String,
}

impl ParamError {
    pub fn new(key: impl Into<String>, msg: impl Into<String>) -> Self {
        ParamError {
            key: key.into(),
            msg: msg.into(),
        }
    }
    /// The same error under a parent key (`train` + `epochs` → `train.epochs`).
    pub fn under(mut self, parent: &str) -> Self {
        self.key = if self.key.is_empty() {
            parent.into()
        } else {
            format!("{parent}.{}", self.key)
        };
        self
    }
}

/// Why a stage failed. Lower layers' errors convert with `?`; the cause is in the message once.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("parameter {0}")]
    Param(#[from] ParamError),
    #[error("input '{slot}': {msg}")]
    Input { slot: String, msg: String },
    #[error("output '{slot}': {msg}")]
    Output { slot: String, msg: String },
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Synth(#[from] crate::data::synth::SynthError),
    #[error(transparent)]
    Dataset(#[from] super::dataset::DatasetError),
    #[error(transparent)]
    Checkpoint(#[from] crate::model::CheckpointError),
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    #[error(transparent)]
    Cam(#[from] crate::localize::CamError),
    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{0}")]
    Failed(String),
}

impl StageError {
    pub fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        StageError::Io {
            path: path.into(),
            msg: e.to_string(),
        }
    }
}

/// A rough cost for `suite plan`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Estimate {
    /// Seconds on one CPU core (None: unknown).
    pub cpu_seconds: Option<f64>,
    /// Peak memory in bytes (None: unknown).
    pub memory_bytes: Option<u64>,
}

/// What `estimate` may look at besides the parameters.
pub struct EstimateContext<'a> {
    /// Sizes (number of samples) of the datasets bound to the stage's inputs, where known.
    pub dataset_sizes: &'a BTreeMap<String, usize>,
    pub device: Device,
}

/// A series for plots (e.g. training loss per epoch).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub x_label: String,
    pub y_label: String,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

/// What a stage reports besides its output files: metrics by name (the kind's `METRICS`) and curves.
/// Stored as `result.json` in the stage directory, so a cached stage reports the same.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageResult {
    pub metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub curves: BTreeMap<String, Curve>,
}

impl StageResult {
    pub fn metric(mut self, name: &str, value: f64) -> Self {
        self.metrics.insert(name.into(), value);
        self
    }
    pub fn curve(mut self, name: &str, curve: Curve) -> Self {
        self.curves.insert(name.into(), curve);
        self
    }
}

/// An artefact of a finished stage, bound to an input slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Artefact {
    pub kind: ArtefactKind,
    pub path: PathBuf,
    /// The producing stage's fingerprint and slot: stable before the stage has run, so plans can predict
    /// downstream fingerprints.
    pub fingerprint: String,
    /// `<stage>.<slot>` that produced it.
    pub producer: String,
}

/// A resolved input.
#[derive(Debug, Clone)]
pub enum Input {
    Artefact(Artefact),
    Dataset(Arc<DatasetHandle>),
}

impl Input {
    pub fn fingerprint(&self) -> &str {
        match self {
            Input::Artefact(a) => &a.fingerprint,
            Input::Dataset(d) => &d.fingerprint,
        }
    }
}

/// Everything a running stage may use. Nothing else (no globals, no environment) should change its outputs.
pub struct StageContext<'a> {
    /// The stage instance's name in the suite.
    pub stage: &'a str,
    /// The temporary directory the outputs go to; published atomically by the cache after `run` returns.
    pub out_dir: &'a Path,
    pub outputs: &'static [Slot],
    pub inputs: &'a BTreeMap<String, Input>,
    /// The run's seed: every random choice of the stage flows from it.
    pub seed: u64,
    pub device: Device,
    pub precision: Precision,
    /// Where built datasets live (`<data-dir>/<name>/index/<split>.jsonl`).
    pub data_dir: &'a Path,
    /// Torch intra-op threads in effect.
    pub threads: usize,
    /// How progress is shown (a bar, log lines, nothing); make indicators with [`StageContext::progress`].
    pub progress: Mode,
    /// A deliberate bug for tests (None in every real run; see `RunOptions::fault`). The graph runner puts
    /// it in the fingerprints of the stages it breaks.
    pub fault: Option<super::Fault>,
}

impl StageContext<'_> {
    /// A progress indicator for part of this stage, labelled `<stage> <what>` (e.g. `vanilla train`), for
    /// the library functions that take a `&Progress`. Call `finish` on it when the part is done.
    pub fn progress(&self, what: &str, total: Option<u64>, unit: ProgressUnit) -> Progress {
        Progress::with_mode(
            &format!("{} {what}", self.stage),
            total,
            unit,
            self.progress,
        )
    }

    /// The path of output `slot` (inside the temporary stage directory).
    pub fn output(&self, slot: &str) -> Result<PathBuf, StageError> {
        let s = self
            .outputs
            .iter()
            .find(|s| s.name == slot)
            .ok_or_else(|| StageError::Output {
                slot: slot.into(),
                msg: "not a declared output of this stage kind".into(),
            })?;
        Ok(self.out_dir.join(s.file))
    }

    /// The artefact bound to input `slot`; an error when it is unbound or a dataset.
    pub fn artefact(&self, slot: &str) -> Result<&Artefact, StageError> {
        match self.inputs.get(slot) {
            Some(Input::Artefact(a)) => Ok(a),
            Some(Input::Dataset(_)) => Err(StageError::Input {
                slot: slot.into(),
                msg: "is bound to a dataset, expected a stage output".into(),
            }),
            None => Err(StageError::Input {
                slot: slot.into(),
                msg: "is not bound".into(),
            }),
        }
    }

    /// The artefact bound to an optional input slot, if any.
    pub fn optional_artefact(&self, slot: &str) -> Result<Option<&Artefact>, StageError> {
        match self.inputs.get(slot) {
            None => Ok(None),
            Some(_) => self.artefact(slot).map(Some),
        }
    }

    /// The dataset bound to input `slot`.
    pub fn dataset(&self, slot: &str) -> Result<&DatasetHandle, StageError> {
        match self.inputs.get(slot) {
            Some(Input::Dataset(d)) => Ok(d),
            Some(Input::Artefact(a)) => Err(StageError::Input {
                slot: slot.into(),
                msg: format!("is bound to {}, expected a dataset", a.producer),
            }),
            None => Err(StageError::Input {
                slot: slot.into(),
                msg: "is not bound".into(),
            }),
        }
    }

    /// Writes `value` as pretty JSON to output `slot`.
    pub fn write_json(&self, slot: &str, value: &impl Serialize) -> Result<(), StageError> {
        let path = self.output(slot)?;
        write_json(&path, value)
    }
}

/// Pretty JSON to `path` (stage outputs; the cache makes the directory's publication atomic).
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), StageError> {
    let s = serde_json::to_string_pretty(value).map_err(|e| StageError::io(path, e))?;
    std::fs::write(path, s).map_err(|e| StageError::io(path, e))
}

/// Reads JSON written by a stage; a malformed file names itself.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StageError> {
    let s = std::fs::read_to_string(path).map_err(|e| StageError::io(path, e))?;
    serde_json::from_str(&s).map_err(|e| StageError::io(path, format!("invalid JSON: {e}")))
}

/// A stage kind. See the module documentation for an example.
pub trait Stage: Send + Sync + 'static {
    /// Typed parameters, read with `deny_unknown_fields`. `Default` gives the values of keys left out.
    type Params: Serialize + DeserializeOwned;
    const KIND: &'static str;
    /// Part of the fingerprint: bump when the same parameters and inputs give different outputs.
    const VERSION: u32;
    const INPUTS: &'static [Slot];
    const OUTPUTS: &'static [Slot];
    const METRICS: &'static [MetricSpec];
    /// Declared metrics a run may leave out (one per optional input that was not bound, say); every other
    /// declared metric must be emitted, or the stage fails and publishes nothing.
    const OPTIONAL_METRICS: &'static [&'static str] = &[];
    /// One line for `suite ls` and `--help`.
    const ABOUT: &'static str = "";

    /// Domain checks beyond the types (positive sizes, probabilities in range), naming the key.
    fn validate(_params: &Self::Params) -> Result<(), ParamError> {
        Ok(())
    }

    /// A rough cost for `suite plan`.
    fn estimate(_params: &Self::Params, _ctx: &EstimateContext) -> Estimate {
        Estimate::default()
    }

    /// Splits of a bound built dataset's build that `run` reads beside the bound one (ImageNet-C's
    /// corruption splits), by input slot: their index files enter the stage's fingerprint.
    fn extra_splits(_params: &Self::Params, _slot: &str) -> Vec<String> {
        Vec::new()
    }

    fn run(params: &Self::Params, ctx: &mut StageContext) -> Result<StageResult, StageError>;
}

/// Parameters after parsing and validation, as canonical JSON (defaults filled in, keys sorted): what the
/// fingerprint hashes and what `run` deserializes again.
pub type ResolvedParams = serde_json::Value;

/// How parsing a stage's parameters failed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamsParseError {
    /// Path inside `params` (`train.epochs`), empty for the table itself.
    pub key: String,
    pub msg: String,
}

/// The object-safe face of a [`Stage`], held by the registry.
pub trait DynStage: Send + Sync {
    fn kind(&self) -> &'static str;
    fn version(&self) -> u32;
    fn inputs(&self) -> &'static [Slot];
    fn outputs(&self) -> &'static [Slot];
    fn metrics(&self) -> &'static [MetricSpec];
    fn optional_metrics(&self) -> &'static [&'static str];
    fn about(&self) -> &'static str;
    /// Parses (strictly) and validates the `params` table of a stage instance.
    fn parse(&self, params: toml::Value) -> Result<ResolvedParams, ParamsParseError>;
    fn estimate(&self, params: &ResolvedParams, ctx: &EstimateContext) -> Estimate;
    /// [`Stage::extra_splits`].
    fn extra_splits(&self, params: &ResolvedParams, slot: &str) -> Vec<String>;
    fn run(
        &self,
        params: &ResolvedParams,
        ctx: &mut StageContext,
    ) -> Result<StageResult, StageError>;
}

/// Wraps a [`Stage`] type as a [`DynStage`].
pub struct Registered<S: Stage>(std::marker::PhantomData<S>);

impl<S: Stage> Default for Registered<S> {
    fn default() -> Self {
        Registered(std::marker::PhantomData)
    }
}

impl<S: Stage> Registered<S> {
    fn typed(params: &ResolvedParams) -> Result<S::Params, StageError> {
        serde_json::from_value(params.clone()).map_err(|e| {
            StageError::Failed(format!(
                "{}: resolved parameters do not read back: {e}",
                S::KIND
            ))
        })
    }
}

impl<S: Stage> DynStage for Registered<S> {
    fn kind(&self) -> &'static str {
        S::KIND
    }
    fn version(&self) -> u32 {
        S::VERSION
    }
    fn inputs(&self) -> &'static [Slot] {
        S::INPUTS
    }
    fn outputs(&self) -> &'static [Slot] {
        S::OUTPUTS
    }
    fn metrics(&self) -> &'static [MetricSpec] {
        S::METRICS
    }
    fn optional_metrics(&self) -> &'static [&'static str] {
        S::OPTIONAL_METRICS
    }
    fn about(&self) -> &'static str {
        S::ABOUT
    }
    fn parse(&self, params: toml::Value) -> Result<ResolvedParams, ParamsParseError> {
        let typed: S::Params = serde_path_to_error::deserialize(params).map_err(|e| {
            let key = e.path().to_string();
            ParamsParseError {
                key: if key == "." { String::new() } else { key },
                msg: e.inner().to_string(),
            }
        })?;
        S::validate(&typed).map_err(|e| ParamsParseError {
            key: e.key,
            msg: e.msg,
        })?;
        serde_json::to_value(&typed).map_err(|e| ParamsParseError {
            key: String::new(),
            msg: format!("parameters do not serialise: {e}"),
        })
    }
    fn estimate(&self, params: &ResolvedParams, ctx: &EstimateContext) -> Estimate {
        match Self::typed(params) {
            Ok(p) => S::estimate(&p, ctx),
            Err(_) => Estimate::default(),
        }
    }
    fn extra_splits(&self, params: &ResolvedParams, slot: &str) -> Vec<String> {
        match Self::typed(params) {
            Ok(p) => S::extra_splits(&p, slot),
            Err(_) => Vec::new(),
        }
    }
    fn run(
        &self,
        params: &ResolvedParams,
        ctx: &mut StageContext,
    ) -> Result<StageResult, StageError> {
        let p = Self::typed(params)?;
        S::run(&p, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_error_paths_nest() {
        let e = ParamError::new("epochs", "must be positive").under("train");
        assert_eq!(e.to_string(), "train.epochs: must be positive");
        assert_eq!(ParamError::new("", "x").under("a").key, "a");
    }
}
