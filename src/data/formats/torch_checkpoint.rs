//! PyTorch checkpoints (`torch.save` files) read without Python and without running pickle code.
//!
//! Both serializations: the zip archive of torch ≥ 1.6 (`<name>/data.pkl` whose persistent ids name the
//! entries `<name>/data/<key>`, `<name>/byteorder`), and the legacy stream that torch wrote before 1.6 and
//! still writes with `_use_new_zipfile_serialization=False` (five pickles in a row — magic number, protocol
//! version 1001, system info, the object, the list of storage keys — then every storage as an int64 element
//! count followed by its raw bytes, in that order; `torch/serialization.py::_legacy_save`).
//!
//! The object pickle goes through [`TorchGlobals`]: tensor rebuilds, storage types and plain containers are
//! understood; what checkpoints carry beside the weights (Lightning's `hyper_parameters` with the official
//! code's pickled Kornia augmentation module, callback states, optimizer states) is read as inert records;
//! every other global is refused at its opcode, before anything is written.
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::pickle::{self, Accept, Global, Object, Pickle, PickleError, Policy, Val};
use crate::data::error::{DataError, IoContext, Result};

/// The two container formats of `torch.save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serialization {
    /// torch ≥ 1.6 default.
    Zip,
    /// The pre-1.6 pickle stream (`_use_new_zipfile_serialization=False`).
    Legacy,
}

impl Serialization {
    pub fn name(self) -> &'static str {
        match self {
            Serialization::Zip => "zip",
            Serialization::Legacy => "legacy",
        }
    }
}

/// Element types of PyTorch storages that checkpoints hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Dtype {
    /// The dtype of a legacy typed storage class (`torch.FloatStorage`, …).
    pub fn of_storage(name: &str) -> Option<Dtype> {
        Some(match name {
            "DoubleStorage" => Dtype::F64,
            "FloatStorage" => Dtype::F32,
            "HalfStorage" => Dtype::F16,
            "BFloat16Storage" => Dtype::BF16,
            "LongStorage" => Dtype::I64,
            "IntStorage" => Dtype::I32,
            "ShortStorage" => Dtype::I16,
            "CharStorage" => Dtype::I8,
            "ByteStorage" => Dtype::U8,
            "BoolStorage" => Dtype::Bool,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }

    /// The name torch gives it (`torch.float32` …).
    pub fn torch_name(self) -> &'static str {
        match self {
            Dtype::F64 => "float64",
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
            Dtype::BF16 => "bfloat16",
            Dtype::I64 => "int64",
            Dtype::I32 => "int32",
            Dtype::I16 => "int16",
            Dtype::I8 => "int8",
            Dtype::U8 => "uint8",
            Dtype::Bool => "bool",
        }
    }
}

/// A tensor copied out of its storage: contiguous (row-major), little-endian, in the file's dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// The globals a checkpoint pickle may name, and what each becomes. Nothing is ever imported or called:
/// accepting a global means reading it as the data listed here.
pub struct TorchGlobals;

/// Module prefixes whose classes are read as inert records: they occur beside the weights (nn.Module
/// objects pickled into Lightning's `hyper_parameters`, e.g. the official code's `KorniaTransform` and its
/// Kornia augmentations, with the torch distributions and enums those hold; Lightning ≤ 1.2 callback
/// classes used as dict keys of the callback states), and nothing of them is used or run.
const INERT_MODULE_PREFIXES: &[&str] = &[
    "torch.nn.modules.",
    "torch.distributions.",
    "kornia.",
    "data.transforms",
    "pytorch_lightning.callbacks.",
];

const TORCH_DTYPES: &[&str] = &[
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
    "bool", "double", "float", "half", "long", "int", "short",
];

impl Policy for TorchGlobals {
    fn accept(&self, module: &str, name: &str) -> Option<Accept> {
        let inert = || {
            INERT_MODULE_PREFIXES
                .iter()
                .any(|p| module == p.trim_end_matches('.') || module.starts_with(p))
        };
        Some(match (module, name) {
            (
                "torch._utils",
                "_rebuild_tensor_v2"
                | "_rebuild_tensor"
                | "_rebuild_parameter"
                | "_rebuild_parameter_with_state",
            ) => Accept::Record,
            ("torch", n) if Dtype::of_storage(n).is_some() => Accept::Name,
            ("torch", n) if TORCH_DTYPES.contains(&n) => Accept::Name,
            ("torch", "device" | "Size") => Accept::Record,
            ("collections", "OrderedDict") => Accept::Dict {
                state_is_items: false,
            },
            (
                "pytorch_lightning.utilities.parsing"
                | "lightning.pytorch.utilities.parsing"
                | "lightning_fabric.utilities.data"
                | "lightning.fabric.utilities.data",
                "AttributeDict",
            ) => Accept::Dict {
                state_is_items: false,
            },
            ("argparse", "Namespace") => Accept::Dict {
                state_is_items: true,
            },
            ("builtins" | "__builtin__", "set" | "frozenset") => Accept::Set,
            ("_codecs", "encode") => Accept::Latin1Bytes,
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct" | "scalar")
            | ("numpy", "dtype") => Accept::Record,
            ("numpy", "ndarray") => Accept::Name,
            _ if inert() => Accept::Record,
            _ => return None,
        })
    }

    fn persistent_ids(&self) -> bool {
        true
    }
}

/// Plain data only (the legacy format's header pickles and storage-key list).
struct NoGlobals;

impl Policy for NoGlobals {
    fn accept(&self, _: &str, _: &str) -> Option<Accept> {
        None
    }
}

/// `torch.serialization.MAGIC_NUMBER`, 0x1950a86a20f9469cfc6c, as little-endian bytes.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_PROTOCOL: i64 = 1001;

/// Where one storage's bytes are.
#[derive(Debug, Clone)]
enum StorageData {
    /// Index of the zip entry.
    ZipEntry(usize),
    /// Byte range in the legacy stream.
    Range(usize, usize),
}

/// An opened checkpoint: its object pickle and where each storage lies. Storages are read only when a
/// tensor is asked for.
pub struct TorchCheckpoint {
    pub path: PathBuf,
    pub serialization: Serialization,
    pub pickle: Pickle,
    bytes: Vec<u8>,
    storages: HashMap<String, StorageData>,
    zip: Option<std::cell::RefCell<zip::ZipArchive<std::io::Cursor<Vec<u8>>>>>,
}

/// A storage reference as the persistent id gives it.
struct StorageRef {
    dtype: Dtype,
    key: String,
    numel: usize,
    /// Legacy storage views: (offset, numel) in elements within the root storage.
    view: Option<(usize, usize)>,
}

impl TorchCheckpoint {
    /// Opens `path`, parses its object pickle (refusing anything [`TorchGlobals`] does not accept) and
    /// locates its storages. A truncated or corrupt file is an error naming it.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).at(path)?;
        if bytes.starts_with(b"PK\x03\x04") {
            Self::open_zip(path, bytes)
        } else if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
            Err(fmt_err(
                path,
                "a tar-format checkpoint (torch < 0.4); load and re-save it with a newer torch",
            ))
        } else if bytes.first() == Some(&0x80) {
            Self::open_legacy(path, bytes)
        } else {
            Err(fmt_err(
                path,
                "not a PyTorch checkpoint (neither a zip archive nor a legacy pickle stream)",
            ))
        }
    }

    fn open_zip(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let corrupt = |e: zip::result::ZipError| {
            fmt_err(
                path,
                format!("not a complete PyTorch zip checkpoint (truncated or corrupt?): {e}"),
            )
        };
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(corrupt)?;
        let names: Vec<String> = (0..zip.len())
            .map(|i| match zip.name_for_index(i) {
                Some(Ok(n)) => Ok(n.into_owned()),
                Some(Err(e)) => Err(corrupt(e)),
                None => Err(fmt_err(path, "zip entry index out of range")),
            })
            .collect::<Result<_>>()?;
        let pkl: Vec<&String> = names
            .iter()
            .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
            .collect();
        let [pkl] = pkl.as_slice() else {
            return Err(fmt_err(
                path,
                format!(
                    "a zip archive without exactly one `<name>/data.pkl` ({} found): not a torch.save file",
                    pkl.len()
                ),
            ));
        };
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        let read_entry = |zip: &mut zip::ZipArchive<_>, name: &str| -> Result<Vec<u8>> {
            let mut f = zip.by_name(name).map_err(corrupt)?;
            let mut v = Vec::new();
            f.read_to_end(&mut v)
                .map_err(|e| fmt_err(path, format!("entry {name}: {e} (truncated or corrupt?)")))?;
            Ok(v)
        };
        let data = read_entry(&mut zip, pkl)?;
        if names.iter().any(|n| *n == format!("{prefix}byteorder")) {
            let order = read_entry(&mut zip, &format!("{prefix}byteorder"))?;
            if order != b"little" {
                return Err(fmt_err(
                    path,
                    format!(
                        "saved on a {} machine; only little-endian checkpoints are read",
                        String::from_utf8_lossy(&order)
                    ),
                ));
            }
        }
        let pickle = pickle::parse_with(&data, &TorchGlobals).map_err(|e| pickle_err(path, e))?;
        let data_prefix = format!("{prefix}data/");
        let storages = names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                n.strip_prefix(&data_prefix)
                    .map(|k| (k.to_string(), StorageData::ZipEntry(i)))
            })
            .collect();
        Ok(Self {
            path: path.into(),
            serialization: Serialization::Zip,
            pickle,
            bytes: Vec::new(),
            storages,
            zip: Some(std::cell::RefCell::new(zip)),
        })
    }

    fn open_legacy(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let mut at = 0usize;
        let next = |policy: &dyn Policy, at: &mut usize| -> Result<Pickle> {
            let p = pickle::parse_with(&bytes[*at..], policy)
                .map_err(|e| pickle_err(path, shift(e, *at)))?;
            *at += p.end;
            Ok(p)
        };
        let magic = next(&NoGlobals, &mut at)?;
        if magic.object(magic.root) != Some(&Object::BigInt(LEGACY_MAGIC.to_vec())) {
            return Err(fmt_err(
                path,
                "does not start with torch's magic number: not a PyTorch checkpoint",
            ));
        }
        let proto = next(&NoGlobals, &mut at)?;
        if proto.int(proto.root) != Some(LEGACY_PROTOCOL) {
            return Err(fmt_err(
                path,
                format!("legacy protocol version {:?}, expected 1001", proto.root),
            ));
        }
        let sys = next(&NoGlobals, &mut at)?;
        if sys.get(sys.root, "little_endian") != Some(Val::Bool(true)) {
            return Err(fmt_err(
                path,
                "saved on a big-endian machine (or without system info); only little-endian checkpoints are read",
            ));
        }
        let pickle = next(&TorchGlobals, &mut at)?;
        let keys = next(&NoGlobals, &mut at)?;
        let keys: Vec<String> = keys
            .seq(keys.root)
            .and_then(|ks| {
                ks.iter()
                    .map(|k| keys.str(*k).map(str::to_string))
                    .collect()
            })
            .ok_or_else(|| fmt_err(path, "the storage-key list is not a list of strings"))?;
        // Every root storage's dtype and size, from the persistent ids of the object pickle.
        let mut roots: HashMap<String, (Dtype, usize)> = HashMap::new();
        for id in pickle.persistent_ids() {
            if let Ok(s) = storage_ref(&pickle, id) {
                roots.insert(s.key, (s.dtype, s.numel));
            }
        }
        let mut storages = HashMap::new();
        for key in keys {
            let (dtype, numel) = *roots.get(&key).ok_or_else(|| {
                fmt_err(
                    path,
                    format!("storage {key} is listed but no tensor refers to it"),
                )
            })?;
            let header = bytes.get(at..at + 8).ok_or_else(|| truncated(path, &key))?;
            let mut h = [0u8; 8];
            h.copy_from_slice(header);
            let stored = i64::from_le_bytes(h);
            if usize::try_from(stored).ok() != Some(numel) {
                return Err(fmt_err(
                    path,
                    format!("storage {key} holds {stored} elements, its tensors say {numel} (corrupt file?)"),
                ));
            }
            let start = at + 8;
            let len = numel
                .checked_mul(dtype.size())
                .ok_or_else(|| fmt_err(path, format!("storage {key} is impossibly large")))?;
            let end = start
                .checked_add(len)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| truncated(path, &key))?;
            storages.insert(key, StorageData::Range(start, end));
            at = end;
        }
        Ok(Self {
            path: path.into(),
            serialization: Serialization::Legacy,
            pickle,
            bytes,
            storages,
            zip: None,
        })
    }

    /// The tensor a `_rebuild_tensor_v2` / `_rebuild_parameter` record describes, copied out of its
    /// storage. Anything else is an error naming `what` (e.g. the state-dict key).
    pub fn tensor(&self, v: Val, what: &str) -> Result<RawTensor> {
        let bad = |msg: String| fmt_err(&self.path, format!("{what}: {msg}"));
        let p = &self.pickle;
        let mut v = v;
        // A parameter wraps a tensor once.
        for _ in 0..2 {
            let Some(Object::Call { function, args, .. }) = p.object(v) else {
                return Err(bad("not a tensor".into()));
            };
            let args = p
                .seq(*args)
                .ok_or_else(|| bad("tensor arguments are not a tuple".into()))?;
            match (function.module.as_str(), function.name.as_str()) {
                ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                    v = *args
                        .first()
                        .ok_or_else(|| bad("parameter without data".into()))?;
                }
                ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") if args.len() >= 4 => {
                    let s = tensor_storage(p, args[0]).map_err(bad)?;
                    let offset =
                        nonneg(p, args[1]).ok_or_else(|| bad("bad storage offset".into()))?;
                    let ints = |v: Val| -> Option<Vec<usize>> {
                        p.seq(v)?.iter().map(|x| nonneg(p, *x)).collect()
                    };
                    let shape = ints(args[2]).ok_or_else(|| bad("bad size".into()))?;
                    let stride = ints(args[3]).ok_or_else(|| bad("bad stride".into()))?;
                    return self.gather(&s, offset, shape, &stride).map_err(bad);
                }
                _ => return Err(bad(format!("`{function}` does not make a plain tensor"))),
            }
        }
        Err(bad("nested parameters".into()))
    }

    /// Copies the strided view out of the storage into a contiguous buffer.
    fn gather(
        &self,
        s: &StorageRef,
        offset: usize,
        shape: Vec<usize>,
        stride: &[usize],
    ) -> std::result::Result<RawTensor, String> {
        if shape.len() != stride.len() {
            return Err(format!(
                "size {shape:?} and stride {stride:?} differ in rank"
            ));
        }
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or("impossibly large tensor")?;
        let storage = self.storage_bytes(s)?;
        let es = s.dtype.size();
        let avail = storage.len() / es;
        if numel > avail {
            // Such a view repeats elements (stride 0 or overlapping strides); state dicts hold none, and
            // its size would not be bounded by the file's.
            return Err(format!(
                "tensor of size {shape:?} has more elements than its storage of {avail} (an expanded view?)"
            ));
        }
        let mut data = Vec::new();
        if numel > 0 {
            let last = shape
                .iter()
                .zip(stride)
                .try_fold(offset, |a, (&d, &st)| {
                    a.checked_add((d - 1).checked_mul(st)?)
                })
                .ok_or("impossibly large tensor")?;
            if last >= avail {
                return Err(format!(
                    "tensor of size {shape:?}, stride {stride:?}, offset {offset} reaches past its storage of {avail} elements (corrupt file?)"
                ));
            }
            data.reserve(numel * es);
            let contiguous = {
                let mut expect = 1usize;
                let mut ok = true;
                for (&d, &st) in shape.iter().zip(stride).rev() {
                    if d != 1 && st != expect {
                        ok = false;
                    }
                    expect *= d;
                }
                ok
            };
            if contiguous {
                data.extend_from_slice(&storage[offset * es..(offset + numel) * es]);
            } else {
                let mut idx = vec![0usize; shape.len()];
                for _ in 0..numel {
                    let e: usize =
                        offset + idx.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
                    data.extend_from_slice(&storage[e * es..(e + 1) * es]);
                    for d in (0..shape.len()).rev() {
                        idx[d] += 1;
                        if idx[d] < shape[d] {
                            break;
                        }
                        idx[d] = 0;
                    }
                }
            }
        }
        Ok(RawTensor {
            dtype: s.dtype,
            shape,
            data,
        })
    }

    /// The bytes of a storage (or of a legacy storage view).
    fn storage_bytes(
        &self,
        s: &StorageRef,
    ) -> std::result::Result<std::borrow::Cow<'_, [u8]>, String> {
        let es = s.dtype.size();
        let whole: std::borrow::Cow<[u8]> = match self.storages.get(&s.key) {
            Some(StorageData::Range(a, b)) => std::borrow::Cow::Borrowed(&self.bytes[*a..*b]),
            Some(StorageData::ZipEntry(i)) => {
                let zip = self.zip.as_ref().ok_or("zip entry in a legacy file")?;
                let mut zip = zip.borrow_mut();
                let mut f = zip
                    .by_index(*i)
                    .map_err(|e| format!("storage {}: {e} (corrupt file?)", s.key))?;
                // torch stores storages uncompressed, so their size is bounded by the file's.
                if f.compression() != zip::CompressionMethod::Stored {
                    return Err(format!(
                        "storage {} is compressed; torch.save writes storages uncompressed",
                        s.key
                    ));
                }
                let mut v = Vec::new();
                f.read_to_end(&mut v)
                    .map_err(|e| format!("storage {}: {e} (truncated or corrupt?)", s.key))?;
                std::borrow::Cow::Owned(v)
            }
            None => return Err(format!("storage {} is missing from the file", s.key)),
        };
        let need = s.numel.checked_mul(es).ok_or("impossibly large storage")?;
        if whole.len() != need {
            return Err(format!(
                "storage {} has {} bytes, its tensors say {need} (truncated or corrupt?)",
                s.key,
                whole.len()
            ));
        }
        Ok(match s.view {
            None => whole,
            Some((off, n)) => {
                let range = off
                    .checked_add(n)
                    .and_then(|end| Some((off.checked_mul(es)?, end.checked_mul(es)?)))
                    .filter(|&(_, b)| b <= whole.len());
                let Some((a, b)) = range else {
                    return Err(format!("storage view of {} reaches past it", s.key));
                };
                match whole {
                    std::borrow::Cow::Borrowed(w) => std::borrow::Cow::Borrowed(&w[a..b]),
                    std::borrow::Cow::Owned(w) => std::borrow::Cow::Owned(w[a..b].to_vec()),
                }
            }
        })
    }
}

/// The storage a tensor's first argument refers to.
fn tensor_storage(p: &Pickle, v: Val) -> std::result::Result<StorageRef, String> {
    match p.object(v) {
        Some(Object::Persistent(id)) => storage_ref(p, *id),
        _ => Err("tensor storage is not a persistent reference".into()),
    }
}

/// A persistent id `('storage', StorageType, key, location, numel[, view_metadata])`.
fn storage_ref(p: &Pickle, id: Val) -> std::result::Result<StorageRef, String> {
    let t = p.seq(id).ok_or("storage reference is not a tuple")?;
    if t.len() < 5 || p.str(t[0]) != Some("storage") {
        return Err("persistent id is not a storage".into());
    }
    let g: &Global = p.global(t[1]).ok_or("storage type is not a global")?;
    let dtype = Dtype::of_storage(&g.name)
        .filter(|_| g.module == "torch")
        .ok_or_else(|| format!("unsupported storage type `{g}`"))?;
    let key = p
        .str(t[2])
        .ok_or("storage key is not a string")?
        .to_string();
    let numel = nonneg(p, t[4]).ok_or("bad storage size")?;
    let view = match t.get(5) {
        None | Some(Val::None) => None,
        Some(m) => {
            let m = p.seq(*m).ok_or("bad storage view")?;
            match m {
                [_, off, n] => Some((
                    nonneg(p, *off).ok_or("bad view offset")?,
                    nonneg(p, *n).ok_or("bad view size")?,
                )),
                _ => return Err("bad storage view".into()),
            }
        }
    };
    Ok(StorageRef {
        dtype,
        key,
        numel,
        view,
    })
}

fn nonneg(p: &Pickle, v: Val) -> Option<usize> {
    usize::try_from(p.int(v)?).ok()
}

fn fmt_err(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.into(),
        msg: msg.into(),
    }
}

fn truncated(path: &Path, key: &str) -> DataError {
    fmt_err(
        path,
        format!("the file ends inside storage {key} (truncated download?)"),
    )
}

fn pickle_err(path: &Path, error: PickleError) -> DataError {
    DataError::Pickle {
        path: path.into(),
        error,
    }
}

/// Offsets of a pickle that starts `by` bytes into the file, made file offsets.
fn shift(e: PickleError, by: usize) -> PickleError {
    match e {
        PickleError::Truncated(o) => PickleError::Truncated(o + by),
        PickleError::Refused { global, offset } => PickleError::Refused {
            global,
            offset: offset + by,
        },
        PickleError::NotCallable { global, offset } => PickleError::NotCallable {
            global,
            offset: offset + by,
        },
        PickleError::Opcode { op, offset } => PickleError::Opcode {
            op,
            offset: offset + by,
        },
        PickleError::Malformed { offset, msg } => PickleError::Malformed {
            offset: offset + by,
            msg,
        },
    }
}
