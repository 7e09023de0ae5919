//! Export of a contracam checkpoint's ResNet encoder to detectron2, for the detection/segmentation
//! fine-tuning of Table 5: exactly the official `detection/convert-pretrain-to-detectron2.py`.
//!
//! That script keeps the `state_dict` keys that start with `encoder.` (in their order) and renames them with
//! Python's `str.replace` (every occurrence): drop `encoder.`; prefix `stem.` when the key has no `layer`;
//! `layer1..4` → `res2..5`; `bn1..3` → `conv1..3.norm`; `downsample.0` → `shortcut`; `downsample.1` →
//! `shortcut.norm`. Values become numpy arrays (`v.numpy()`), and the pickle is
//! `{"model": {...}, "__author__": "MOCO", "matching_heuristics": True}`.
//!
//! Keys come in torchvision's state-dict order (the order of the Lightning state dict the script iterates).
//! bfloat16 weights, which `v.numpy()` cannot convert (the script would fail), are widened to float32
//! exactly; every other dtype is kept.
use std::path::{Path, PathBuf};

use tch::Kind;

use super::checkpoint::CheckpointError;
use crate::data::formats::pickle::{NumpyDtype, Writer};
use crate::data::formats::safetensors::read_tensors;
use crate::util::output::write_atomic;

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Detectron2Export {
    pub out: PathBuf,
    /// (contracam name, detectron2 name) in the written order.
    pub renamed: Vec<(String, String)>,
}

/// The detectron2 name of an `encoder.*` key, as the official converter computes it.
pub fn detectron2_name(key: &str) -> String {
    let mut k = key.replace("encoder.", "");
    if !k.contains("layer") {
        k = format!("stem.{k}");
    }
    for t in 1..=4 {
        k = k.replace(&format!("layer{t}"), &format!("res{}", t + 1));
    }
    for t in 1..=3 {
        k = k.replace(&format!("bn{t}"), &format!("conv{t}.norm"));
    }
    k.replace("downsample.0", "shortcut")
        .replace("downsample.1", "shortcut.norm")
}

/// Position of a torchvision ResNet parameter in its state dict: module registration order (`conv1`,
/// `bn1`, then `layerN.B.{conv1, bn1, conv2, bn2, conv3, bn3, downsample.0, downsample.1}`), and inside a
/// module `weight, bias, running_mean, running_var, num_batches_tracked`.
fn state_dict_order(key: &str) -> (u32, u32, u32, u32, String) {
    let parts: Vec<&str> = key.split('.').collect();
    let module_rank = |m: &str, sub: Option<&str>| -> u32 {
        match (m, sub) {
            ("conv1", _) => 0,
            ("bn1", _) => 1,
            ("conv2", _) => 2,
            ("bn2", _) => 3,
            ("conv3", _) => 4,
            ("bn3", _) => 5,
            ("downsample", Some("0")) => 6,
            ("downsample", Some("1")) => 7,
            _ => 8,
        }
    };
    let param_rank = |p: &str| -> u32 {
        match p {
            "weight" => 0,
            "bias" => 1,
            "running_mean" => 2,
            "running_var" => 3,
            "num_batches_tracked" => 4,
            _ => 5,
        }
    };
    // parts[0] is "encoder".
    let rest = &parts[1.min(parts.len())..];
    match rest {
        [layer, block, module, tail @ ..] if layer.starts_with("layer") => {
            let l = layer[5..].parse().unwrap_or(9);
            let b = block.parse().unwrap_or(u32::MAX);
            let sub = if *module == "downsample" {
                tail.first().copied()
            } else {
                None
            };
            let param = tail.last().copied().unwrap_or("");
            (
                l,
                b,
                module_rank(module, sub),
                param_rank(param),
                key.into(),
            )
        }
        [module, param] => (
            0,
            0,
            module_rank(module, None),
            param_rank(param),
            key.into(),
        ),
        _ => (10, 0, 0, 0, key.into()),
    }
}

/// Writes the detectron2 pickle of the `encoder.*` tensors of the contracam checkpoint `src` to `out`
/// (atomically).
pub fn export_detectron2(src: &Path, out: &Path) -> Result<Detectron2Export, CheckpointError> {
    let file = read_tensors(src)?;
    let mut keys: Vec<&String> = file
        .tensors
        .keys()
        .filter(|k| k.starts_with("encoder."))
        .collect();
    if keys.is_empty() {
        return Err(CheckpointError::Import {
            path: src.into(),
            msg: "no `encoder.*` tensors to export".into(),
        });
    }
    keys.sort_by_key(|k| state_dict_order(k));
    let mut w = Writer::new();
    w.begin_dict();
    w.str("model");
    w.begin_dict();
    let mut renamed = Vec::new();
    for key in keys {
        let t = file.tensors[key].to_device(tch::Device::Cpu).contiguous();
        let (t, dtype) = match t.kind() {
            Kind::Float => (t, NumpyDtype::F32),
            Kind::Double => (t, NumpyDtype::F64),
            Kind::Half => (t, NumpyDtype::F16),
            Kind::BFloat16 => (t.to_kind(Kind::Float), NumpyDtype::F32),
            Kind::Int64 => (t, NumpyDtype::I64),
            Kind::Int => (t, NumpyDtype::I32),
            Kind::Uint8 => (t, NumpyDtype::U8),
            Kind::Bool => (t, NumpyDtype::Bool),
            k => {
                return Err(CheckpointError::Import {
                    path: src.into(),
                    msg: format!("{key}: dtype {k:?} has no detectron2 export"),
                })
            }
        };
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)
            .map_err(|e| CheckpointError::Import {
                path: src.into(),
                msg: format!("{key}: {e}"),
            })?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let name = detectron2_name(key);
        w.str(&name);
        w.ndarray(dtype, &shape, &data);
        renamed.push((key.clone(), name));
    }
    w.end_dict();
    w.str("__author__");
    w.str("MOCO");
    w.str("matching_heuristics");
    w.bool(true);
    w.end_dict();
    write_atomic(out, &w.finish()).map_err(|e| CheckpointError::Import {
        path: out.into(),
        msg: e.to_string(),
    })?;
    Ok(Detectron2Export {
        out: out.into(),
        renamed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_the_official_converter() {
        for (k, want) in [
            ("encoder.conv1.weight", "stem.conv1.weight"),
            ("encoder.bn1.running_var", "stem.conv1.norm.running_var"),
            ("encoder.layer1.0.conv3.weight", "res2.0.conv3.weight"),
            ("encoder.layer4.2.bn3.bias", "res5.2.conv3.norm.bias"),
            (
                "encoder.layer2.0.downsample.0.weight",
                "res3.0.shortcut.weight",
            ),
            (
                "encoder.layer3.0.downsample.1.num_batches_tracked",
                "res4.0.shortcut.norm.num_batches_tracked",
            ),
        ] {
            assert_eq!(detectron2_name(k), want, "{k}");
        }
    }

    #[test]
    fn torchvision_state_dict_order() {
        let mut keys = vec![
            "encoder.layer1.0.downsample.1.weight",
            "encoder.layer1.0.bn1.bias",
            "encoder.layer10.0.conv1.weight",
            "encoder.bn1.weight",
            "encoder.layer1.0.conv1.weight",
            "encoder.conv1.weight",
            "encoder.layer1.0.downsample.0.weight",
            "encoder.layer1.0.bn1.weight",
            "encoder.layer1.1.conv1.weight",
            "encoder.layer2.0.conv1.weight",
            "encoder.bn1.num_batches_tracked",
            "encoder.bn1.running_mean",
        ];
        keys.sort_by_key(|k| state_dict_order(k));
        assert_eq!(
            keys,
            vec![
                "encoder.conv1.weight",
                "encoder.bn1.weight",
                "encoder.bn1.running_mean",
                "encoder.bn1.num_batches_tracked",
                "encoder.layer1.0.conv1.weight",
                "encoder.layer1.0.bn1.weight",
                "encoder.layer1.0.bn1.bias",
                "encoder.layer1.0.downsample.0.weight",
                "encoder.layer1.0.downsample.1.weight",
                "encoder.layer1.1.conv1.weight",
                "encoder.layer2.0.conv1.weight",
                "encoder.layer10.0.conv1.weight",
            ]
        );
    }
}
