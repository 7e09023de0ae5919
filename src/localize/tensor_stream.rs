//! Record-at-a-time access to safetensors files, so post-processing streams over a dataset in constant
//! memory: the reader seeks to the rows it needs; the writer lays out the header first and fills each
//! tensor's rows in place (positioned writes), so several outputs can be produced in one pass.
//!
//! Format: 8-byte little-endian header length, a JSON header `{name: {dtype, shape, data_offsets}}` (plus an
//! optional `__metadata__` map of strings), then the data, each tensor row-major and little-endian.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TensorStreamError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid safetensors header: {msg}")]
    Header { path: PathBuf, msg: String },
    #[error("{path}: no tensor {key:?} (has: {available})")]
    MissingKey {
        path: PathBuf,
        key: String,
        available: String,
    },
    #[error("{path}: tensor {key:?} is {dtype} {shape:?}, expected {expected}")]
    Layout {
        path: PathBuf,
        key: String,
        dtype: String,
        shape: Vec<usize>,
        expected: String,
    },
}

/// Element types used by the localisation tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    U8,
    F32,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "U8",
            Dtype::F32 => "F32",
        }
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::F32 => 4,
        }
    }
}

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Byte range relative to the start of the data section.
    pub begin: u64,
    pub end: u64,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Reads rows of tensors without loading the file.
#[derive(Debug)]
pub struct SafetensorsReader {
    path: PathBuf,
    file: File,
    data_start: u64,
    tensors: BTreeMap<String, TensorInfo>,
}

impl SafetensorsReader {
    pub fn open(path: &Path) -> Result<Self, TensorStreamError> {
        let io = |source| TensorStreamError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bad = |msg: String| TensorStreamError::Header {
            path: path.to_path_buf(),
            msg,
        };
        let mut file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut len = [0u8; 8];
        file.read_exact(&mut len).map_err(io)?;
        let hlen = u64::from_le_bytes(len);
        if hlen > 100 << 20 || 8 + hlen > file_len {
            return Err(bad(format!(
                "header length {hlen} does not fit a {file_len}-byte file"
            )));
        }
        let mut header = vec![0u8; hlen as usize];
        file.read_exact(&mut header).map_err(io)?;
        let json: serde_json::Value =
            serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
        let obj = json
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let data_len = file_len - 8 - hlen;
        let mut tensors = BTreeMap::new();
        for (name, v) in obj {
            if name == "__metadata__" {
                continue;
            }
            let dtype = v["dtype"]
                .as_str()
                .ok_or_else(|| bad(format!("{name}: no dtype")))?
                .to_string();
            let shape = v["shape"]
                .as_array()
                .ok_or_else(|| bad(format!("{name}: no shape")))?
                .iter()
                .map(|d| {
                    d.as_u64()
                        .map(|d| d as usize)
                        .ok_or_else(|| bad(format!("{name}: bad shape")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let offs = v["data_offsets"]
                .as_array()
                .ok_or_else(|| bad(format!("{name}: no data_offsets")))?;
            let (begin, end) = match (
                offs.first().and_then(|x| x.as_u64()),
                offs.get(1).and_then(|x| x.as_u64()),
            ) {
                (Some(b), Some(e)) if b <= e && e <= data_len => (b, e),
                _ => {
                    return Err(bad(format!(
                        "{name}: data_offsets {offs:?} outside the {data_len}-byte data"
                    )))
                }
            };
            let info = TensorInfo {
                dtype,
                shape,
                begin,
                end,
            };
            let elem = match info.dtype.as_str() {
                "U8" | "I8" | "BOOL" => 1,
                "F16" | "BF16" | "I16" | "U16" => 2,
                "F32" | "I32" | "U32" => 4,
                _ => 8,
            };
            if (info.numel() * elem) as u64 != end - begin {
                return Err(bad(format!(
                    "{name}: {} bytes for {:?} {}",
                    end - begin,
                    info.shape,
                    info.dtype
                )));
            }
            tensors.insert(name.clone(), info);
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            data_start: 8 + hlen,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header entry of `key`.
    pub fn info(&self, key: &str) -> Result<&TensorInfo, TensorStreamError> {
        self.tensors
            .get(key)
            .ok_or_else(|| TensorStreamError::MissingKey {
                path: self.path.clone(),
                key: key.to_string(),
                available: self.tensors.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Checks dtype and rank of `key` and returns its shape.
    pub fn expect(
        &self,
        key: &str,
        dtype: Dtype,
        ok: impl Fn(&[usize]) -> bool,
        expected: &str,
    ) -> Result<Vec<usize>, TensorStreamError> {
        let info = self.info(key)?;
        if info.dtype != dtype.name() || !ok(&info.shape) {
            return Err(TensorStreamError::Layout {
                path: self.path.clone(),
                key: key.to_string(),
                dtype: info.dtype.clone(),
                shape: info.shape.clone(),
                expected: format!("{} {expected}", dtype.name()),
            });
        }
        Ok(info.shape.clone())
    }

    /// Reads `buf.len()` bytes of tensor `key`, starting `byte_offset` bytes into it.
    pub fn read_bytes(
        &mut self,
        key: &str,
        byte_offset: u64,
        buf: &mut [u8],
    ) -> Result<(), TensorStreamError> {
        let info = self.info(key)?.clone();
        if byte_offset + buf.len() as u64 > info.end - info.begin {
            return Err(TensorStreamError::Header {
                path: self.path.clone(),
                msg: format!("read past the end of {key:?}"),
            });
        }
        let io = |source| TensorStreamError::Io {
            path: self.path.clone(),
            source,
        };
        self.file
            .seek(SeekFrom::Start(self.data_start + info.begin + byte_offset))
            .map_err(io)?;
        self.file.read_exact(buf).map_err(io)
    }

    /// Reads `count` float32 values of `key` starting at element `start`.
    pub fn read_f32(
        &mut self,
        key: &str,
        start: usize,
        count: usize,
    ) -> Result<Vec<f32>, TensorStreamError> {
        let mut bytes = vec![0u8; count * 4];
        self.read_bytes(key, start as u64 * 4, &mut bytes)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// Reads `count` bytes of a uint8 tensor `key` starting at element `start`.
    pub fn read_u8(
        &mut self,
        key: &str,
        start: usize,
        count: usize,
    ) -> Result<Vec<u8>, TensorStreamError> {
        let mut bytes = vec![0u8; count];
        self.read_bytes(key, start as u64, &mut bytes)?;
        Ok(bytes)
    }
}

/// Writes tensors whose shapes are known up front, row by row in any order.
#[derive(Debug)]
pub struct SafetensorsWriter {
    path: PathBuf,
    file: File,
    data_start: u64,
    tensors: BTreeMap<String, (Dtype, Vec<usize>, u64)>,
}

impl SafetensorsWriter {
    /// Creates `path` with a header for `tensors` (name, dtype, shape) and optional string metadata.
    pub fn create(
        path: &Path,
        tensors: &[(&str, Dtype, Vec<usize>)],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self, TensorStreamError> {
        let io = |source| TensorStreamError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut header = serde_json::Map::new();
        let mut entries = BTreeMap::new();
        let mut offset = 0u64;
        for (name, dtype, shape) in tensors {
            let bytes = (shape.iter().product::<usize>() * dtype.size()) as u64;
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [offset, offset + bytes]}),
            );
            entries.insert(name.to_string(), (*dtype, shape.clone(), offset));
            offset += bytes;
        }
        if !metadata.is_empty() {
            header.insert(
                "__metadata__".into(),
                serde_json::to_value(metadata).unwrap_or_default(),
            );
        }
        let mut text = serde_json::to_string(&header).map_err(|e| TensorStreamError::Header {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        while !text.len().is_multiple_of(8) {
            text.push(' ');
        }
        let mut file = File::create(path).map_err(io)?;
        file.write_all(&(text.len() as u64).to_le_bytes())
            .map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        let data_start = 8 + text.len() as u64;
        file.set_len(data_start + offset).map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            data_start,
            tensors: entries,
        })
    }

    /// Writes raw little-endian bytes into tensor `name` at element `start`.
    pub fn write_bytes(
        &mut self,
        name: &str,
        start: usize,
        bytes: &[u8],
    ) -> Result<(), TensorStreamError> {
        let (dtype, shape, offset) =
            self.tensors
                .get(name)
                .cloned()
                .ok_or_else(|| TensorStreamError::MissingKey {
                    path: self.path.clone(),
                    key: name.to_string(),
                    available: self.tensors.keys().cloned().collect::<Vec<_>>().join(", "),
                })?;
        let total = (shape.iter().product::<usize>() * dtype.size()) as u64;
        let at = (start * dtype.size()) as u64;
        if at + bytes.len() as u64 > total {
            return Err(TensorStreamError::Header {
                path: self.path.clone(),
                msg: format!("write past the end of {name:?}"),
            });
        }
        let io = |source| TensorStreamError::Io {
            path: self.path.clone(),
            source,
        };
        self.file
            .seek(SeekFrom::Start(self.data_start + offset + at))
            .map_err(io)?;
        self.file.write_all(bytes).map_err(io)
    }

    pub fn write_f32(
        &mut self,
        name: &str,
        start: usize,
        values: &[f32],
    ) -> Result<(), TensorStreamError> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write_bytes(name, start, &bytes)
    }

    /// Flushes and closes the file.
    pub fn finish(mut self) -> Result<(), TensorStreamError> {
        let io = |source| TensorStreamError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.flush().map_err(io)?;
        self.file.sync_all().map_err(io)
    }
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
        w.finish().unwrap();

        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("b").unwrap().data(), &[5, 6, 7, 8]);
        assert_eq!(st.tensor("a").unwrap().shape(), &[2, 3]);

        let mut r = SafetensorsReader::open(&path).unwrap();
        assert_eq!(r.read_f32("a", 2, 3).unwrap(), vec![3.0, 4.0, 5.0]);
        assert_eq!(r.read_u8("b", 1, 2).unwrap(), vec![6, 7]);
        assert!(matches!(
            r.info("c"),
            Err(TensorStreamError::MissingKey { .. })
        ));
        assert!(r.expect("a", Dtype::U8, |_| true, "any").is_err());
    }
}
