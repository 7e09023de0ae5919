//! What the training states of the self-supervised loop (`fit`'s state) and of the supervised classifier
//! (`supervised`'s state) share: one safetensors file written atomically (`write_tensors` renames a
//! temporary file into place), the networks' variables and SGD momentum buffers by name, exact f64
//! curves, JSON metadata under one key, and the refusal of a state written for another run, naming the
//! first field that differs.
pub(crate) mod momentum;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tch::nn::{Optimizer, VarStore};
use tch::{Kind, Tensor};

use self::momentum::SgdSettings;
use crate::data::formats::safetensors::TensorFile;
use crate::train::error::TrainError;

pub(crate) fn err(path: &Path, msg: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.into(),
        msg: msg.into(),
    }
}

/// The trainable parameters of `vs` by name, sorted (the order the momentum buffers are stored in).
pub(crate) fn trainable(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The first field where `want` (this run) and `got` (the checkpoint) differ, as `prefix.key`, with both
/// values.
pub(crate) fn first_difference(
    prefix: &str,
    want: &Value,
    got: &Value,
) -> Option<(String, String, String)> {
    match (want, got) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                first_difference(
                    &format!("{prefix}.{k}"),
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                )
            })
        }
        _ if want == got => None,
        _ => Some((prefix.into(), want.to_string(), got.to_string())),
    }
}

/// Refuses a state whose recorded values (`got`) differ from this run's (`want`), naming the first
/// differing field of the first table that differs.
pub(crate) fn refuse_other_run(
    path: &Path,
    tables: &[(&str, Value, Value)],
) -> Result<(), TrainError> {
    for (prefix, want, got) in tables {
        if let Some((key, want, got)) = first_difference(prefix, want, got) {
            return Err(err(
                path,
                format!(
                    "written for {key} = {got}, this run has {want}; resume with the checkpoint's \
                     config or start a new run"
                ),
            ));
        }
    }
    Ok(())
}

/// The JSON metadata under `key`, checked to carry `format`; `writer` says what writes such files.
pub(crate) fn read_meta<T: DeserializeOwned>(
    path: &Path,
    file: &TensorFile,
    key: &str,
    format: &str,
    writer: &str,
) -> Result<T, TrainError> {
    let json = file.metadata.get(key).ok_or_else(|| {
        err(
            path,
            format!("no '{key}' metadata: not a training state written by {writer}"),
        )
    })?;
    let v: Value =
        serde_json::from_str(json).map_err(|e| err(path, format!("metadata '{key}': {e}")))?;
    let found = v.get("format").and_then(Value::as_str).unwrap_or("");
    if found != format {
        return Err(err(
            path,
            format!("format '{found}', this build reads '{format}'"),
        ));
    }
    serde_json::from_value(v).map_err(|e| err(path, format!("metadata '{key}': {e}")))
}

/// The tensor `key` of a state file.
pub(crate) fn tensor<'a>(
    path: &Path,
    file: &'a TensorFile,
    key: &str,
) -> Result<&'a Tensor, TrainError> {
    file.tensors
        .get(key)
        .ok_or_else(|| err(path, format!("no tensor '{key}'")))
}

/// Every variable of `vs` (parameters and BatchNorm buffers) as `prefix/name`, sorted, detached.
pub(crate) fn variables(prefix: &str, vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.into_iter()
        .map(|(n, t)| (format!("{prefix}/{n}"), t.detach()))
        .collect()
}

/// Copies the saved `prefix/name` tensors into the variables of `vs`, checking every shape.
pub(crate) fn load_variables(
    path: &Path,
    file: &TensorFile,
    prefix: &str,
    vs: &VarStore,
) -> Result<(), TrainError> {
    for (n, mut var) in vs.variables() {
        let saved = tensor(path, file, &format!("{prefix}/{n}"))?;
        if saved.size() != var.size() {
            return Err(err(
                path,
                format!(
                    "{prefix}/{n}: shape {:?}, expected {:?}",
                    saved.size(),
                    var.size()
                ),
            ));
        }
        tch::no_grad(|| var.copy_(saved));
    }
    Ok(())
}

/// The SGD momentum buffer of every trainable parameter of `vs` as `momentum/name` (call after at least
/// one step; `settings` are the optimiser's, put back afterwards).
pub(crate) fn momentum_tensors(
    opt: &mut Optimizer,
    vs: &VarStore,
    settings: &SgdSettings,
) -> Vec<(String, Tensor)> {
    let params = trainable(vs);
    let values: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
    let buffers = momentum::read(opt, &values, settings);
    params
        .into_iter()
        .zip(buffers)
        .map(|((n, _), b)| (format!("momentum/{n}"), b))
        .collect()
}

/// Installs the saved `momentum/name` buffers in a fresh optimiser over `vs`.
pub(crate) fn load_momentum(
    path: &Path,
    file: &TensorFile,
    opt: &mut Optimizer,
    vs: &VarStore,
    settings: &SgdSettings,
) -> Result<(), TrainError> {
    let params = trainable(vs);
    let mut buffers = Vec::with_capacity(params.len());
    for (n, t) in &params {
        let b = tensor(path, file, &format!("momentum/{n}"))?;
        if b.size() != t.size() {
            return Err(err(
                path,
                format!(
                    "momentum/{n}: shape {:?}, expected {:?}",
                    b.size(),
                    t.size()
                ),
            ));
        }
        buffers.push(b.to_device(t.device()).to_kind(t.kind()));
    }
    let values: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
    momentum::write(opt, &values, &buffers, settings);
    Ok(())
}

/// The f64 values saved under `key` (running sums and curves, exactly), checked to number `expected`.
pub(crate) fn f64_values(
    path: &Path,
    file: &TensorFile,
    key: &str,
    expected: usize,
    layout: &str,
) -> Result<Vec<f64>, TrainError> {
    let values = Vec::<f64>::try_from(tensor(path, file, key)?.to_kind(Kind::Double))
        .map_err(|e| err(path, format!("{key}: {e}")))?;
    if values.len() != expected {
        return Err(err(
            path,
            format!(
                "{key} has {} entries, expected {expected} ({layout})",
                values.len()
            ),
        ));
    }
    Ok(values)
}
