//! safetensors files with string metadata, written atomically (temp file + rename).
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};
use tch::{Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum TensorFileError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid safetensors file: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("{path}: tensor '{name}' not found; the file has: {available}")]
    MissingKey {
        path: PathBuf,
        name: String,
        available: String,
    },
    #[error("{path}: tensor '{name}' has unsupported dtype {dtype}")]
    Dtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("cannot write {path}: {msg}")]
    Write { path: PathBuf, msg: String },
}

/// The tensors of a file (in file order of names, sorted) and its metadata.
pub struct TensorFile {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    pub fn read(path: &Path) -> Result<Self, TensorFileError> {
        let bytes = std::fs::read(path).map_err(|source| TensorFileError::Io {
            path: path.into(),
            source,
        })?;
        let fmt = |e: safetensors::SafeTensorError| TensorFileError::Format {
            path: path.into(),
            msg: format!("{e:?}"),
        };
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(fmt)?;
        let st = SafeTensors::deserialize(&bytes).map_err(fmt)?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let kind = kind_of(view.dtype()).ok_or_else(|| TensorFileError::Dtype {
                path: path.into(),
                name: name.clone(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let t = Tensor::f_from_data_size(view.data(), &shape, kind).map_err(|e| {
                TensorFileError::Format {
                    path: path.into(),
                    msg: e.to_string(),
                }
            })?;
            tensors.insert(name, t);
        }
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok(Self {
            path: path.into(),
            tensors,
            metadata,
        })
    }

    /// The tensor named `name`, or an error that lists what the file has.
    pub fn get(&self, name: &str) -> Result<&Tensor, TensorFileError> {
        self.tensors
            .get(name)
            .ok_or_else(|| TensorFileError::MissingKey {
                path: self.path.clone(),
                name: name.into(),
                available: self.tensors.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

/// Writes `tensors` (moved to CPU, made contiguous) with `metadata`, atomically.
pub fn write(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &HashMap<String, String>,
) -> Result<(), TensorFileError> {
    let werr = |msg: String| TensorFileError::Write {
        path: path.into(),
        msg,
    };
    let views: Vec<(String, CpuView)> = tensors
        .iter()
        .map(|(n, t)| {
            Ok((
                n.clone(),
                CpuView::new(t).ok_or_else(|| {
                    werr(format!("tensor '{n}' has unsupported kind {:?}", t.kind()))
                })?,
            ))
        })
        .collect::<Result<_, TensorFileError>>()?;
    let meta = if metadata.is_empty() {
        None
    } else {
        Some(metadata.clone())
    };
    let bytes = safetensors::tensor::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), &meta)
        .map_err(|e| werr(format!("{e:?}")))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| werr(e.to_string()))?;
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| werr(e.to_string()))?;
    std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| werr(e.to_string()))?;
    tmp.persist(path).map_err(|e| werr(e.to_string()))?;
    Ok(())
}

struct CpuView {
    data: Vec<u8>,
    shape: Vec<usize>,
    dtype: Dtype,
}

impl CpuView {
    fn new(t: &Tensor) -> Option<Self> {
        let dtype = dtype_of(t.kind())?;
        let t = t.to_device(tch::Device::Cpu).contiguous();
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel).ok()?;
        Some(Self {
            data,
            shape: t.size().iter().map(|&d| d as usize).collect(),
            dtype,
        })
    }
}

impl View for &CpuView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn kind_of(d: Dtype) -> Option<Kind> {
    Some(match d {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F16 => Kind::Half,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

fn dtype_of(k: Kind) -> Option<Dtype> {
    Some(match k {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        _ => return None,
    })
}
