//! safetensors, the one reader and writer of the project (checkpoints, CAMs, images, masks, features).
//!
//! Format: 8-byte little-endian header length, a JSON header `{name: {dtype, shape, data_offsets}}` (plus an
//! optional `__metadata__` map of strings), then the data, each tensor row-major and little-endian, the
//! tensors back to back in offset order.
//!
//! - [`parse_header`] validates everything before a byte of data is touched: the header length against the
//!   file (a text file or any other format is "not a safetensors file", never a 10¹⁹-byte allocation),
//!   known dtypes, shapes whose byte size does not overflow, offsets that tile the data exactly.
//! - [`SafetensorsReader`] reads rows of a tensor without loading the file (post-processing streams over a
//!   dataset in constant memory); [`read_tensors`] loads a whole file as tch tensors after checking it fits
//!   in the available memory.
//! - [`SafetensorsWriter`] lays out the header first and fills each tensor's rows in place (positioned
//!   writes), so several outputs are produced in one pass; [`write_tensors`] writes whole tch tensors one at
//!   a time. Both write a temporary file that is renamed into place when complete.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::data::error::{DataError, IoContext, Result};
use crate::util::output::AtomicFile;

/// Largest header accepted (the safetensors crate's own limit).
pub const MAX_HEADER_BYTES: u64 = 100 << 20;

/// Element types of the safetensors format that tch can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
}

impl Dtype {
    const ALL: [Dtype; 13] = [
        Dtype::Bool,
        Dtype::U8,
        Dtype::I8,
        Dtype::I16,
        Dtype::U16,
        Dtype::F16,
        Dtype::BF16,
        Dtype::I32,
        Dtype::U32,
        Dtype::F32,
        Dtype::F64,
        Dtype::I64,
        Dtype::U64,
    ];

    /// The name in the header (`"F32"`, `"U8"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
        }
    }

    pub fn parse(s: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }

    /// The tch kind holding it (`None` for U16/U32/U64, which libtorch tensors do not support here).
    pub fn kind(self) -> Option<Kind> {
        Some(match self {
            Dtype::Bool => Kind::Bool,
            Dtype::U8 => Kind::Uint8,
            Dtype::I8 => Kind::Int8,
            Dtype::I16 => Kind::Int16,
            Dtype::I32 => Kind::Int,
            Dtype::I64 => Kind::Int64,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F16 => Kind::Half,
            Dtype::F32 => Kind::Float,
            Dtype::F64 => Kind::Double,
            Dtype::U16 | Dtype::U32 | Dtype::U64 => return None,
        })
    }

    pub fn of_kind(k: Kind) -> Option<Dtype> {
        Some(match k {
            Kind::Bool => Dtype::Bool,
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
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range relative to the start of the data section.
    pub begin: u64,
    pub end: u64,
}

impl TensorInfo {
    /// Elements (the shape's product; validated not to overflow).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn byte_len(&self) -> u64 {
        self.end - self.begin
    }

    /// `F32 [2, 3, 4]`.
    pub fn describe(&self) -> String {
        format!("{} {:?}", self.dtype, self.shape)
    }
}

/// A validated header.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Header {
    pub tensors: BTreeMap<String, TensorInfo>,
    pub metadata: BTreeMap<String, String>,
    /// Where the data section starts in the file (8 + header length).
    pub data_start: u64,
}

/// Elements and bytes of `shape` in `dtype`, or `None` when either overflows.
pub fn byte_size(shape: &[usize], dtype: Dtype) -> Option<u64> {
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    (numel as u64).checked_mul(dtype.size() as u64)
}

/// Validates the length prefix of a `file_len`-byte file and returns the header length.
pub fn header_len(prefix: [u8; 8], file_len: u64) -> std::result::Result<u64, String> {
    let hlen = u64::from_le_bytes(prefix);
    if hlen > MAX_HEADER_BYTES || hlen.saturating_add(8) > file_len {
        return Err(format!(
            "its first 8 bytes announce a {hlen}-byte header in a {file_len}-byte file"
        ));
    }
    Ok(hlen)
}

/// Parses and validates a JSON header for a data section of `data_len` bytes.
pub fn parse_header_json(json: &[u8], data_len: u64) -> std::result::Result<Header, String> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("its header is not JSON ({e})"))?;
    let obj = value.as_object().ok_or("its header is not a JSON object")?;
    let mut header = Header::default();
    for (name, v) in obj {
        if name == "__metadata__" {
            let m = v
                .as_object()
                .ok_or("__metadata__ is not an object of strings")?;
            for (k, v) in m {
                let s = v
                    .as_str()
                    .ok_or_else(|| format!("__metadata__ value of '{k}' is not a string"))?;
                header.metadata.insert(k.clone(), s.to_string());
            }
            continue;
        }
        let entry = v
            .as_object()
            .ok_or_else(|| format!("tensor '{name}': entry is not an object"))?;
        if let Some(k) = entry
            .keys()
            .find(|k| !["dtype", "shape", "data_offsets"].contains(&k.as_str()))
        {
            return Err(format!("tensor '{name}': unknown field '{k}'"));
        }
        let dtype_name = entry
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| format!("tensor '{name}': no dtype"))?;
        let dtype = Dtype::parse(dtype_name)
            .ok_or_else(|| format!("tensor '{name}': unsupported dtype '{dtype_name}'"))?;
        let shape = entry
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| format!("tensor '{name}': no shape"))?
            .iter()
            .map(|d| {
                d.as_u64()
                    .and_then(|d| usize::try_from(d).ok())
                    .ok_or_else(|| format!("tensor '{name}': shape {d} is not a size"))
            })
            .collect::<std::result::Result<Vec<usize>, String>>()?;
        let offs = entry
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .filter(|o| o.len() == 2)
            .ok_or_else(|| format!("tensor '{name}': data_offsets is not [begin, end]"))?;
        let (begin, end) = match (offs[0].as_u64(), offs[1].as_u64()) {
            (Some(b), Some(e)) if b <= e && e <= data_len => (b, e),
            _ => {
                return Err(format!(
                    "tensor '{name}': data_offsets {offs:?} lie outside the {data_len}-byte data"
                ))
            }
        };
        let bytes = byte_size(&shape, dtype).ok_or_else(|| {
            format!("tensor '{name}': shape {shape:?} of {dtype} overflows a 64-bit byte count")
        })?;
        if bytes != end - begin {
            return Err(format!(
                "tensor '{name}': {dtype} {shape:?} needs {bytes} bytes, data_offsets give {}",
                end - begin
            ));
        }
        header.tensors.insert(
            name.clone(),
            TensorInfo {
                dtype,
                shape,
                begin,
                end,
            },
        );
    }
    // The tensors tile the data section exactly, as every safetensors writer lays them out.
    let mut ranges: Vec<(u64, u64, &str)> = header
        .tensors
        .iter()
        .map(|(n, t)| (t.begin, t.end, n.as_str()))
        .collect();
    ranges.sort();
    let mut at = 0u64;
    for (b, e, n) in ranges {
        if b != at {
            return Err(format!(
                "tensor '{n}' starts at byte {b} of the data, expected {at} (overlapping or gapped data_offsets)"
            ));
        }
        at = e;
    }
    if at != data_len {
        return Err(format!(
            "the tensors cover {at} of the {data_len} data bytes"
        ));
    }
    Ok(header)
}

/// Parses the header of a whole file held in memory (for tests and fuzzing).
pub fn parse_header(bytes: &[u8]) -> std::result::Result<Header, String> {
    let prefix: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            format!(
                "it has {} bytes, fewer than the 8-byte length prefix",
                bytes.len()
            )
        })?;
    let hlen = header_len(prefix, bytes.len() as u64)?;
    let end = 8 + hlen as usize;
    let mut h = parse_header_json(&bytes[8..end], (bytes.len() - end) as u64)?;
    h.data_start = end as u64;
    Ok(h)
}

fn not_safetensors(path: &Path, why: String) -> DataError {
    DataError::NotSafetensors {
        path: path.into(),
        why,
    }
}

/// Reads rows of tensors without loading the file.
#[derive(Debug)]
pub struct SafetensorsReader {
    path: PathBuf,
    file: File,
    header: Header,
}

impl SafetensorsReader {
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).at(path)?;
        let meta = file.metadata().at(path)?;
        if meta.is_dir() {
            return Err(not_safetensors(path, "it is a directory".into()));
        }
        let file_len = meta.len();
        let mut prefix = [0u8; 8];
        if file_len < 8 {
            return Err(not_safetensors(
                path,
                format!("it has {file_len} bytes, fewer than the 8-byte length prefix"),
            ));
        }
        file.read_exact(&mut prefix).at(path)?;
        let hlen = header_len(prefix, file_len).map_err(|w| not_safetensors(path, w))?;
        let mut json = vec![0u8; hlen as usize];
        file.read_exact(&mut json).at(path)?;
        let mut header =
            parse_header_json(&json, file_len - 8 - hlen).map_err(|w| not_safetensors(path, w))?;
        header.data_start = 8 + hlen;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            header,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.header.metadata
    }

    /// The names of the tensors, comma separated (for messages).
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.header.tensors.keys().map(|s| s.as_str()).collect();
        if names.is_empty() {
            "no tensors".into()
        } else {
            names.join(", ")
        }
    }

    /// The header entry of `key`, or an error listing what the file has.
    pub fn info(&self, key: &str) -> Result<&TensorInfo> {
        self.header
            .tensors
            .get(key)
            .ok_or_else(|| DataError::MissingTensor {
                path: self.path.clone(),
                key: key.into(),
                available: self.names(),
            })
    }

    /// Checks the dtype and shape of `key` (`ok` on the shape; `expected` describes it for the message)
    /// and returns its shape.
    pub fn expect(
        &self,
        key: &str,
        dtypes: &[Dtype],
        ok: impl Fn(&[usize]) -> bool,
        expected: &str,
    ) -> Result<Vec<usize>> {
        let info = self.info(key)?;
        if !dtypes.contains(&info.dtype) || !ok(&info.shape) {
            let names: Vec<&str> = dtypes.iter().map(|d| d.name()).collect();
            return Err(DataError::TensorLayout {
                path: self.path.clone(),
                key: key.into(),
                found: info.describe(),
                expected: format!("{} {expected}", names.join(" or ")),
            });
        }
        Ok(info.shape.clone())
    }

    /// Reads `buf.len()` bytes of tensor `key`, starting `byte_offset` bytes into it.
    pub fn read_bytes(&mut self, key: &str, byte_offset: u64, buf: &mut [u8]) -> Result<()> {
        let info = self.info(key)?.clone();
        if byte_offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > info.byte_len())
        {
            return Err(crate::data::error::format_err(
                &self.path,
                format!(
                    "read of {} bytes at {byte_offset} past the end of tensor '{key}'",
                    buf.len()
                ),
            ));
        }
        self.file
            .seek(SeekFrom::Start(
                self.header.data_start + info.begin + byte_offset,
            ))
            .at(&self.path)?;
        self.file.read_exact(buf).at(&self.path)
    }

    /// Reads `count` float32 values of `key` starting at element `start`.
    pub fn read_f32(&mut self, key: &str, start: usize, count: usize) -> Result<Vec<f32>> {
        let mut bytes = vec![0u8; count * 4];
        self.read_bytes(key, start as u64 * 4, &mut bytes)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// Reads `count` bytes of a one-byte tensor `key` starting at element `start`.
    pub fn read_u8(&mut self, key: &str, start: usize, count: usize) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; count];
        self.read_bytes(key, start as u64, &mut bytes)?;
        Ok(bytes)
    }

    /// The whole tensor `key` as a CPU tch tensor (its bytes must fit in the available memory).
    pub fn read_tensor(&mut self, key: &str) -> Result<Tensor> {
        let info = self.info(key)?.clone();
        let kind = info.dtype.kind().ok_or_else(|| DataError::TensorLayout {
            path: self.path.clone(),
            key: key.into(),
            found: info.describe(),
            expected: "a dtype libtorch holds (not U16/U32/U64)".into(),
        })?;
        crate::util::memory::ensure_fits(
            info.byte_len().saturating_mul(2),
            &format!(
                "{}: tensor '{key}' ({})",
                self.path.display(),
                info.describe()
            ),
        )
        .map_err(|e| crate::data::error::format_err(&self.path, e.to_string()))?;
        let mut bytes = vec![0u8; info.byte_len() as usize];
        self.read_bytes(key, 0, &mut bytes)?;
        let shape: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
        Tensor::f_from_data_size(&bytes, &shape, kind)
            .map_err(|e| crate::data::error::format_err(&self.path, format!("tensor '{key}': {e}")))
    }
}

/// The tensors of a file (by name) and its metadata.
pub struct TensorFile {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl TensorFile {
    /// The tensor named `name`, or an error listing what the file has.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| DataError::MissingTensor {
                path: self.path.clone(),
                key: name.into(),
                available: if self.tensors.is_empty() {
                    "no tensors".into()
                } else {
                    self.tensors.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            })
    }
}

/// Loads every tensor of `path` onto the CPU.
pub fn read_tensors(path: &Path) -> Result<TensorFile> {
    let mut r = SafetensorsReader::open(path)?;
    let data: u64 = r.header.tensors.values().map(|t| t.byte_len()).sum();
    crate::util::memory::ensure_fits(data, &format!("reading {}", path.display()))
        .map_err(|e| crate::data::error::format_err(path, e.to_string()))?;
    let names: Vec<String> = r.header.tensors.keys().cloned().collect();
    let mut tensors = BTreeMap::new();
    for name in names {
        let t = r.read_tensor(&name)?;
        tensors.insert(name, t);
    }
    Ok(TensorFile {
        path: path.into(),
        tensors,
        metadata: r.header.metadata.clone(),
    })
}

/// Writes tensors whose shapes are known up front, row by row in any order, into a temporary file that
/// [`SafetensorsWriter::finish`] renames to `path` (dropped unfinished, nothing is left behind).
pub struct SafetensorsWriter {
    path: PathBuf,
    file: AtomicFile,
    data_start: u64,
    tensors: BTreeMap<String, TensorInfo>,
}

impl SafetensorsWriter {
    /// Creates the header for `tensors` (name, dtype, shape) and string `metadata`; checks the free disk
    /// space for the whole file first.
    pub fn create(
        path: &Path,
        tensors: &[(&str, Dtype, Vec<usize>)],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let mut header = serde_json::Map::new();
        let mut entries = BTreeMap::new();
        let mut offset = 0u64;
        for (name, dtype, shape) in tensors {
            let bytes = byte_size(shape, *dtype)
                .and_then(|b| offset.checked_add(b).map(|e| (b, e)))
                .ok_or_else(|| {
                    crate::data::error::format_err(
                        path,
                        format!("tensor '{name}' {dtype} {shape:?} overflows a 64-bit byte count"),
                    )
                })?;
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [offset, bytes.1]}),
            );
            entries.insert(
                name.to_string(),
                TensorInfo {
                    dtype: *dtype,
                    shape: shape.clone(),
                    begin: offset,
                    end: bytes.1,
                },
            );
            offset = bytes.1;
        }
        if !metadata.is_empty() {
            let m: serde_json::Map<String, serde_json::Value> = metadata
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            header.insert("__metadata__".into(), serde_json::Value::Object(m));
        }
        let mut text = serde_json::Value::Object(header).to_string();
        while !text.len().is_multiple_of(8) {
            text.push(' ');
        }
        let data_start = 8 + text.len() as u64;
        let total = data_start.saturating_add(offset);
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        crate::data::source::download::ensure_space(dir, total)?;
        let mut file = AtomicFile::create(path).map_err(|e| out_err(path, e))?;
        file.write_all(&(text.len() as u64).to_le_bytes())
            .at(path)?;
        file.write_all(text.as_bytes()).at(path)?;
        file.file().set_len(total).at(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            data_start,
            tensors: entries,
        })
    }

    /// Writes raw little-endian bytes into tensor `name` at element `start`.
    pub fn write_bytes(&mut self, name: &str, start: usize, bytes: &[u8]) -> Result<()> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| DataError::MissingTensor {
                path: self.path.clone(),
                key: name.into(),
                available: self.tensors.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        let at = (start as u64).saturating_mul(info.dtype.size() as u64);
        if at.saturating_add(bytes.len() as u64) > info.byte_len() {
            return Err(crate::data::error::format_err(
                &self.path,
                format!("write past the end of tensor '{name}'"),
            ));
        }
        let pos = self.data_start + info.begin + at;
        let f = self.file.file_mut();
        f.seek(SeekFrom::Start(pos)).at(&self.path)?;
        f.write_all(bytes).at(&self.path)
    }

    pub fn write_f32(&mut self, name: &str, start: usize, values: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write_bytes(name, start, &bytes)
    }

    /// Flushes and renames the file into place.
    pub fn finish(self) -> Result<()> {
        let path = self.path;
        self.file.commit().map_err(|e| out_err(&path, e))
    }
}

fn out_err(path: &Path, e: crate::util::output::OutputError) -> DataError {
    crate::data::error::format_err(path, e.to_string())
}

/// Writes whole tensors (moved to the CPU and made contiguous one at a time) with string `metadata`.
pub fn write_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut layout = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = Dtype::of_kind(t.kind()).ok_or_else(|| {
            crate::data::error::format_err(
                path,
                format!(
                    "tensor '{name}' has kind {:?}, which safetensors cannot hold",
                    t.kind()
                ),
            )
        })?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        layout.push((name.as_str(), dtype, shape));
    }
    let mut w = SafetensorsWriter::create(path, &layout, metadata)?;
    for (name, t) in tensors {
        let t = t.to_device(tch::Device::Cpu).contiguous();
        let n = t.numel();
        let mut bytes = vec![0u8; n * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut bytes, n)
            .map_err(|e| crate::data::error::format_err(path, format!("tensor '{name}': {e}")))?;
        w.write_bytes(name, 0, &bytes)?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_compatible_with_the_safetensors_crate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let meta = BTreeMap::from([("info".to_string(), "test".to_string())]);
        let mut w = SafetensorsWriter::create(
            &path,
            &[("a", Dtype::F32, vec![2, 3]), ("b", Dtype::U8, vec![2, 2])],
            &meta,
        )
        .unwrap();
        w.write_bytes("b", 2, &[7, 8]).unwrap();
        w.write_f32("a", 3, &[4.0, 5.0, 6.0]).unwrap();
        w.write_f32("a", 0, &[1.0, 2.0, 3.0]).unwrap();
        w.write_bytes("b", 0, &[5, 6]).unwrap();
        assert!(w.write_f32("a", 5, &[1.0, 2.0]).is_err());
        assert!(!path.exists(), "nothing in place before finish");
        w.finish().unwrap();

        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("b").unwrap().data(), &[5, 6, 7, 8]);
        assert_eq!(st.tensor("a").unwrap().shape(), &[2, 3]);

        let mut r = SafetensorsReader::open(&path).unwrap();
        assert_eq!(r.metadata()["info"], "test");
        assert_eq!(r.read_f32("a", 2, 3).unwrap(), vec![3.0, 4.0, 5.0]);
        assert_eq!(r.read_u8("b", 1, 2).unwrap(), vec![6, 7]);
        assert!(matches!(r.info("c"), Err(DataError::MissingTensor { .. })));
        assert!(r.expect("a", &[Dtype::U8], |_| true, "any").is_err());
        assert!(r.read_u8("b", 3, 2).is_err());
    }

    #[test]
    fn whole_tensors_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let a = Tensor::arange(6, (Kind::Float, tch::Device::Cpu)).reshape([2, 3]);
        let b = Tensor::from_slice(&[1i64, -2]);
        write_tensors(
            &path,
            &[
                ("a".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            &BTreeMap::new(),
        )
        .unwrap();
        let f = read_tensors(&path).unwrap();
        assert!(f.get("a").unwrap().equal(&a));
        assert!(f.get("b").unwrap().equal(&b));
        let e = f.get("c").unwrap_err().to_string();
        assert!(e.contains("'c'") && e.contains("a, b"), "{e}");
    }

    #[test]
    fn other_files_are_not_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "this is a text file, not a checkpoint\n").unwrap();
        let e = SafetensorsReader::open(&text).unwrap_err().to_string();
        assert!(e.contains("is not a safetensors file"), "{e}");
        let short = dir.path().join("short");
        std::fs::write(&short, b"abc").unwrap();
        assert!(SafetensorsReader::open(&short)
            .unwrap_err()
            .to_string()
            .contains("fewer than the 8-byte"));
    }

    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.resize(b.len() + data, 0);
        b
    }

    #[test]
    fn headers_that_lie_are_refused() {
        // A shape whose byte count wraps to 0 in 64 bits.
        let wrap = r#"{"x":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}}"#;
        assert!(parse_header(&file(wrap, 0))
            .unwrap_err()
            .contains("overflows"));
        let huge = r#"{"x":{"dtype":"F32","shape":[1000000000000000],"data_offsets":[0,4]}}"#;
        assert!(parse_header(&file(huge, 4)).unwrap_err().contains("needs"));
        let outside = r#"{"x":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}"#;
        assert!(parse_header(&file(outside, 4))
            .unwrap_err()
            .contains("outside"));
        let overlap = r#"{"x":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"y":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#;
        assert!(parse_header(&file(overlap, 4))
            .unwrap_err()
            .contains("overlapping"));
        let dtype = r#"{"x":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}"#;
        assert!(parse_header(&file(dtype, 1))
            .unwrap_err()
            .contains("F8_E4M3"));
        let meta = r#"{"__metadata__":{"a":1}}"#;
        assert!(parse_header(&file(meta, 0))
            .unwrap_err()
            .contains("not a string"));
        let ok =
            r#"{"__metadata__":{"a":"b"},"x":{"dtype":"U8","shape":[2,2],"data_offsets":[0,4]}}"#;
        let h = parse_header(&file(ok, 4)).unwrap();
        assert_eq!(h.tensors["x"].numel(), 4);
        assert_eq!(h.metadata["a"], "b");
    }
}
