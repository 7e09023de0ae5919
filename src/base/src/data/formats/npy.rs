//! Minimal reader for NumPy `.npy` files holding a 2-D float array (wsolevaluation score maps).
//! Supports format versions 1–3, little-endian `<f4`/`<f8`, C order.
use std::path::Path;

use crate::data::error::{format_err, IoContext, Result as DataResult};

/// A 2-D array widened to `f64` (wsolevaluation's `t2n` gives float64), row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Array2 {
    pub height: usize,
    pub width: usize,
    pub data: Vec<f64>,
}

/// Reads `path` as a 2-D float32/float64 `.npy`.
pub fn read_npy_2d(path: &Path) -> DataResult<Array2> {
    let bytes = std::fs::read(path).at(path)?;
    parse_npy_2d(&bytes).map_err(|msg| format_err(path, msg))
}

/// Parses the bytes of a 2-D float `.npy` file.
pub fn parse_npy_2d(b: &[u8]) -> Result<Array2, String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let major = b[6];
    let (hlen, hstart) = match major {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => {
            if b.len() < 12 {
                return Err("truncated header".into());
            }
            (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = b.get(hstart..hstart + hlen).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let field = |key: &str| -> Result<&str, String> {
        let k = format!("'{key}':");
        let i = header
            .find(&k)
            .ok_or_else(|| format!("header lacks '{key}'"))?;
        Ok(header[i + k.len()..].trim_start())
    };
    let descr = field("descr")?;
    let elem = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        return Err(format!(
            "dtype {} is not little-endian float32/float64",
            descr.split(',').next().unwrap_or("")
        ));
    };
    if !field("fortran_order")?.starts_with("False") {
        return Err("Fortran-order arrays are not supported".into());
    }
    let shape = field("shape")?;
    let shape = shape.strip_prefix('(').ok_or("bad shape")?;
    let shape = &shape[..shape.find(')').ok_or("bad shape")?];
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape dimension '{s}'"))
        })
        .collect::<Result<_, _>>()?;
    if dims.len() != 2 {
        return Err(format!("expected a 2-D array, got shape {dims:?}"));
    }
    let (height, width) = (dims[0], dims[1]);
    let data = &b[hstart + hlen..];
    // Checked: a forged shape must not wrap to a small byte count that matches the data.
    let needed = height
        .checked_mul(width)
        .and_then(|n| n.checked_mul(elem))
        .ok_or_else(|| format!("shape {height}x{width} overflows a byte count"))?;
    if data.len() != needed {
        return Err(format!(
            "data holds {} bytes, shape {height}x{width} needs {needed}",
            data.len(),
        ));
    }
    let data = if elem == 4 {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    };
    Ok(Array2 {
        height,
        width,
        data,
    })
}

/// A float32 (height, width) C-order array as `.npy` bytes (version 1.0, header padded to 64 bytes as numpy
/// writes it).
pub fn encode_npy_2d_f32(height: usize, width: usize, data: &[f32]) -> Vec<u8> {
    assert_eq!(
        data.len(),
        height * width,
        "npy: data does not fit the shape"
    );
    let payload: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy_v1("<f4", &format!("({height}, {width})"), &payload)
}

/// A version-1 `.npy` file: the header for `descr` and `shape` (a Python tuple literal), padded so the data
/// starts at a multiple of 64 bytes as numpy writes it, then `payload` as given (not checked against the shape).
pub fn npy_v1(descr: &str, shape: &str, payload: &[u8]) -> Vec<u8> {
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    b.extend_from_slice(payload);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, payload: &[u8]) -> Vec<u8> {
        npy_v1(descr, shape, payload)
    }

    #[test]
    fn parses_f4_and_f8() {
        let p: Vec<u8> = [0.5f32, 1.0, 0.25, 0.0, 2.0, 3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = parse_npy_2d(&npy("<f4", "(2, 3)", &p)).unwrap();
        assert_eq!((a.height, a.width), (2, 3));
        assert_eq!(a.data, vec![0.5, 1.0, 0.25, 0.0, 2.0, 3.0]);
        let p: Vec<u8> = [0.1f64, 0.2].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            parse_npy_2d(&npy("<f8", "(1, 2)", &p)).unwrap().data,
            vec![0.1, 0.2]
        );
    }

    #[test]
    fn written_arrays_read_back() {
        let data = [0.0f32, 0.25, 1.0, 0.5, 0.125, 0.75];
        let a = parse_npy_2d(&encode_npy_2d_f32(2, 3, &data)).unwrap();
        assert_eq!((a.height, a.width), (2, 3));
        assert_eq!(a.data, data.iter().map(|&v| v as f64).collect::<Vec<_>>());
    }

    #[test]
    fn rejects_wrong_dtype_rank_and_size() {
        assert!(parse_npy_2d(&npy("<i4", "(1, 1)", &[0; 4]))
            .unwrap_err()
            .contains("dtype"));
        assert!(parse_npy_2d(&npy("<f4", "(4,)", &[0; 16]))
            .unwrap_err()
            .contains("2-D"));
        assert!(parse_npy_2d(&npy("<f4", "(2, 2)", &[0; 12]))
            .unwrap_err()
            .contains("needs 16"));
        assert!(parse_npy_2d(b"garbage!!!!").is_err());
    }
}
