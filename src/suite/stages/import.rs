//! `import`: a released PyTorch checkpoint (the official Lightning `.ckpt`, facebookresearch's MoCo v2
//! `.pth.tar`, a torchvision `.pth`) read without executing pickle code into a contracam checkpoint, through
//! [`import_checkpoint`] (`contracam model import`).
//!
//! The source file is outside the suite's stages, so its content must be in the fingerprint: the suite
//! declares the file's sha256 in `params.sha256`, which the fingerprint covers, and the run refuses a file
//! whose hash differs (a changed file never reuses a stale import). Without `sha256` the run stops and
//! prints the hash to declare.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::import::{import_checkpoint, ImportedConfig, Layout};
use crate::model::Arch;
use crate::suite::stage::*;

pub struct Import;

/// The layout of the source file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Detected from the file's keys.
    #[default]
    Auto,
    Lightning,
    MocoV2,
    Torchvision,
}

impl Format {
    fn layout(self) -> Option<Layout> {
        match self {
            Format::Auto => None,
            Format::Lightning => Some(Layout::Lightning),
            Format::MocoV2 => Some(Layout::MocoV2),
            Format::Torchvision => Some(Layout::Torchvision),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    /// The checkpoint file; a relative path is taken from the data directory (`--data-dir`), where the
    /// README says to put the downloaded weights.
    pub source: PathBuf,
    #[serde(default)]
    pub format: Format,
    /// sha256 (hex) of the source file: part of the fingerprint, checked before the import.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The architecture the checkpoint must hold (checked after reading it).
    #[serde(default)]
    pub arch: Option<Arch>,
}

impl Stage for Import {
    type Params = ImportParams;
    const KIND: &'static str = "import";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "reads a released PyTorch checkpoint (Lightning, MoCo v2, torchvision) into safetensors";
    const INPUTS: &'static [Slot] = &[];
    const OUTPUTS: &'static [Slot] = &[Slot::file(
        "model",
        ArtefactKind::ModelCheckpoint,
        "model.safetensors",
    )];
    const METRICS: &'static [MetricSpec] = &[];

    fn validate(p: &ImportParams) -> Result<(), ParamError> {
        if p.source.as_os_str().is_empty() {
            return Err(ParamError::new("source", "must name the checkpoint file"));
        }
        validate_sha256(&p.sha256)
    }

    fn run(p: &ImportParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        let src = declared_source(&p.source, "source", &p.sha256, ctx.data_dir)?;
        let out = ctx.output("model")?;
        let report = import_checkpoint(&src, &out, p.format.layout())?;
        if let Some(want) = p.arch {
            let got = match &report.config {
                ImportedConfig::Contrastive(c) => c.encoder.arch,
                ImportedConfig::Classifier(c) => c.encoder.arch,
            };
            if got != want {
                return Err(ParamError::new(
                    "arch",
                    format!(
                        "{} holds a {got:?}, the suite asks for {want:?}",
                        src.display()
                    ),
                )
                .into());
            }
        }
        Ok(StageResult::default())
    }
}

/// `source` as given when absolute, else under the data directory.
pub fn source_path(source: &Path, data_dir: &Path) -> PathBuf {
    if source.is_absolute() {
        source.to_path_buf()
    } else {
        data_dir.join(source)
    }
}

/// `sha256` as a suite declares it: 64 lowercase hex digits when set.
pub(super) fn validate_sha256(sha256: &Option<String>) -> Result<(), ParamError> {
    if let Some(h) = sha256 {
        if h.len() != 64
            || !h
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ParamError::new(
                "sha256",
                "must be 64 lowercase hex digits (`sha256sum FILE`)",
            ));
        }
    }
    Ok(())
}

/// The path of a file from outside the stages (`key` names its param), checked against the declared
/// `sha256`: without one the run stops and prints the hash to declare, so the fingerprint covers the content.
pub(super) fn declared_source(
    source: &Path,
    key: &str,
    sha256: &Option<String>,
    data_dir: &Path,
) -> Result<PathBuf, StageError> {
    let src = source_path(source, data_dir);
    if !src.is_file() {
        return Err(ParamError::new(
            key,
            format!(
                "{} is not a file (a relative source is taken from the data directory {}); download \
                 the checkpoint there",
                src.display(),
                data_dir.display()
            ),
        )
        .into());
    }
    let actual = crate::data::source::hash::hash_file(&src, false, |_| {})?.sha256;
    match sha256 {
        None => {
            return Err(ParamError::new(
                "sha256",
                format!(
                    "not set: the stage's fingerprint must cover the content of {}; add sha256 = \"{actual}\" \
                     after checking that this is the file you meant",
                    src.display()
                ),
            )
            .into())
        }
        Some(want) if *want != actual => {
            return Err(ParamError::new(
                "sha256",
                format!(
                    "{} has sha256 {actual}, the suite declares {want}: the file changed or is another \
                     one; fix the file or the declared hash",
                    src.display()
                ),
            )
            .into())
        }
        Some(_) => {}
    }
    Ok(src)
}
