//! A minimal reader (and writer, for test fixtures) of MATLAB level-5 `.mat` files: numeric matrices, plain
//! or inside `miCOMPRESSED` elements, as in Flowers-102's `imagelabels.mat` and `setid.mat`. Values come back
//! as f64 in column-major order whatever the stored type (MATLAB stores doubles as smaller integer types
//! when they fit).
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::data::error::{format_err, IoContext, Result};

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// The most one miCOMPRESSED element may inflate to. A variable of the files read here is a few KiB
/// (Flowers-102's `setid.mat` inflates to 64 KiB); zlib expands up to ~1000:1, so without a cap a small
/// crafted file would allocate gigabytes.
pub const MAX_INFLATED_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct MatArray {
    pub dims: Vec<usize>,
    /// Column-major values.
    pub data: Vec<f64>,
}

struct Cur<'a> {
    b: &'a [u8],
    p: usize,
    le: bool,
}

impl Cur<'_> {
    fn u32(&mut self) -> Option<u32> {
        let s: [u8; 4] = self.b.get(self.p..self.p + 4)?.try_into().ok()?;
        self.p += 4;
        Some(if self.le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    }
    /// One data element: (type, payload). Handles the small-element format and 8-byte padding.
    fn element(&mut self) -> Option<(u32, &[u8])> {
        let first = self.u32()?;
        if first >> 16 != 0 {
            let (ty, n) = (first & 0xffff, (first >> 16) as usize);
            let data = self.b.get(self.p..self.p + n)?;
            self.p += 4;
            return Some((ty, data));
        }
        let n = self.u32()? as usize;
        let data = self.b.get(self.p..self.p + n)?;
        self.p += n;
        if first != MI_COMPRESSED {
            self.p += (8 - n % 8) % 8;
        }
        Some((first, data))
    }
}

fn numbers(ty: u32, d: &[u8], le: bool) -> Option<Vec<f64>> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            d.chunks_exact($n)
                .map(|c| {
                    let a: [u8; $n] = c.try_into().unwrap_or([0; $n]);
                    (if le {
                        <$t>::from_le_bytes(a)
                    } else {
                        <$t>::from_be_bytes(a)
                    }) as f64
                })
                .collect()
        };
    }
    Some(match ty {
        MI_INT8 => d.iter().map(|&x| x as i8 as f64).collect(),
        MI_UINT8 => d.iter().map(|&x| x as f64).collect(),
        MI_INT16 => conv!(i16, 2),
        MI_UINT16 => conv!(u16, 2),
        MI_INT32 => conv!(i32, 4),
        MI_UINT32 => conv!(u32, 4),
        MI_SINGLE => conv!(f32, 4),
        MI_DOUBLE => conv!(f64, 8),
        MI_INT64 => conv!(i64, 8),
        MI_UINT64 => conv!(u64, 8),
        _ => return None,
    })
}

fn parse_matrix(payload: &[u8], le: bool, out: &mut BTreeMap<String, MatArray>) -> Option<()> {
    let mut c = Cur {
        b: payload,
        p: 0,
        le,
    };
    let (_, flags) = c.element()?;
    let class = flags.first().copied().unwrap_or(0) as u32 & 0xff;
    let class = if le {
        class
    } else {
        flags.get(3).copied().unwrap_or(0) as u32
    };
    let (dty, dims) = c.element()?;
    let dims: Vec<usize> = numbers(dty, dims, le)?
        .into_iter()
        .map(|x| x as usize)
        .collect();
    let (_, name) = c.element()?;
    let name = String::from_utf8_lossy(name).into_owned();
    // Numeric classes 6..=15 (double, single, int8..uint64); cells/structs/chars are skipped.
    if !(6..=15).contains(&class) {
        return Some(());
    }
    let (ty, re) = c.element()?;
    let data = numbers(ty, re, le)?;
    out.insert(name, MatArray { dims, data });
    Some(())
}

/// Read every numeric variable of a level-5 MAT file.
pub fn read(path: &Path) -> Result<BTreeMap<String, MatArray>> {
    let bytes = std::fs::read(path).at(path)?;
    parse(&bytes).map_err(|why| {
        format_err(
            path,
            format!("not a readable MATLAB level-5 .mat file: {why}"),
        )
    })
}

/// Every numeric variable of the bytes of a level-5 MAT file; the error says which element is malformed.
pub fn parse(bytes: &[u8]) -> std::result::Result<BTreeMap<String, MatArray>, String> {
    if bytes.len() < 128 {
        return Err(format!(
            "{} bytes, shorter than the 128-byte header",
            bytes.len()
        ));
    }
    let le = match &bytes[126..128] {
        b"IM" => true,
        b"MI" => false,
        _ => return Err("no endian indicator (IM or MI) at bytes 126-127".into()),
    };
    let mut out = BTreeMap::new();
    let mut c = Cur {
        b: bytes,
        p: 128,
        le,
    };
    while c.p + 8 <= bytes.len() {
        let at = c.p;
        let bad = |what: &str| format!("{what} at byte {at}");
        let (ty, payload) = c
            .element()
            .ok_or_else(|| bad("data element runs past the end of the file"))?;
        match ty {
            MI_MATRIX => parse_matrix(payload, le, &mut out)
                .ok_or_else(|| bad("malformed miMATRIX element"))?,
            MI_COMPRESSED => {
                let mut inner = vec![];
                flate2::read::ZlibDecoder::new(payload)
                    .take(MAX_INFLATED_BYTES + 1)
                    .read_to_end(&mut inner)
                    .map_err(|e| bad(&format!("miCOMPRESSED element does not inflate ({e})")))?;
                if inner.len() as u64 > MAX_INFLATED_BYTES {
                    return Err(bad(&format!(
                        "miCOMPRESSED element inflates past {} MiB",
                        MAX_INFLATED_BYTES >> 20
                    )));
                }
                let mut ic = Cur {
                    b: &inner,
                    p: 0,
                    le,
                };
                while ic.p + 8 <= inner.len() {
                    let (ity, ip) = ic
                        .element()
                        .ok_or_else(|| bad("miCOMPRESSED element holds a truncated element"))?;
                    if ity == MI_MATRIX {
                        parse_matrix(ip, le, &mut out).ok_or_else(|| {
                            bad("miCOMPRESSED element holds a malformed miMATRIX")
                        })?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn el(ty: u32, data: &[u8]) -> Vec<u8> {
    let mut v = vec![];
    v.extend_from_slice(&ty.to_le_bytes());
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v.resize(v.len() + (8 - data.len() % 8) % 8, 0);
    v
}

/// Write a little-endian level-5 MAT file of double row vectors (1×N). With `compress`, each variable is
/// wrapped in miCOMPRESSED and its values stored as miUINT16, as MATLAB does for small integers.
pub fn write_row_vectors(vars: &[(&str, &[f64])], compress: bool) -> Vec<u8> {
    let mut out = vec![b' '; 128];
    let text = b"MATLAB 5.0 MAT-file, written by contracam test fixtures";
    out[..text.len()].copy_from_slice(text);
    out[124..126].copy_from_slice(&0x0100u16.to_le_bytes());
    out[126..128].copy_from_slice(b"IM");
    for (name, vals) in vars {
        let mut m = vec![];
        m.extend(el(MI_UINT32, &[6u8, 0, 0, 0, 0, 0, 0, 0])); // class double
        let dims: Vec<u8> = [1i32, vals.len() as i32]
            .iter()
            .flat_map(|d| d.to_le_bytes())
            .collect();
        m.extend(el(MI_INT32, &dims));
        m.extend(el(MI_INT8, name.as_bytes()));
        if compress {
            let d: Vec<u8> = vals
                .iter()
                .flat_map(|&v| (v as u16).to_le_bytes())
                .collect();
            m.extend(el(MI_UINT16, &d));
        } else {
            let d: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            m.extend(el(MI_DOUBLE, &d));
        }
        let matrix = el(MI_MATRIX, &m);
        if compress {
            use std::io::Write;
            let mut z = flate2::write::ZlibEncoder::new(vec![], flate2::Compression::default());
            let _ = z.write_all(&matrix);
            let zd = z.finish().unwrap_or_default();
            out.extend_from_slice(&MI_COMPRESSED.to_le_bytes());
            out.extend_from_slice(&(zd.len() as u32).to_le_bytes());
            out.extend_from_slice(&zd);
        } else {
            out.extend(matrix);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_plain_and_compressed() {
        for compress in [false, true] {
            let bytes = write_row_vectors(
                &[("labels", &[77.0, 1.0, 102.0]), ("trnid", &[3.0, 1.0])],
                compress,
            );
            let m = parse(&bytes).unwrap();
            assert_eq!(m["labels"].dims, vec![1, 3]);
            assert_eq!(m["labels"].data, vec![77.0, 1.0, 102.0]);
            assert_eq!(m["trnid"].data, vec![3.0, 1.0]);
        }
    }
}
