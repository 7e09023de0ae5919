//! Streaming checksums. sha256 comes from aws-lc (already linked for rustls): the same assembly as OpenSSL,
//! with SHA-NI or AVX2 chosen at run time, so verification runs at the speed `openssl speed -evp sha256`
//! reports. (`sha2` 0.10 matches it only on CPUs with SHA-NI; without, it is about half as fast.)
use std::io::Read;
use std::path::Path;

use aws_lc_rs::digest::{Context, SHA256};
use md5::{Digest, Md5};

use crate::data::error::{IoContext, Result};

/// Hashes fed incrementally while a file streams in; md5 only when a published md5 needs checking.
#[derive(Clone)]
pub struct StreamHasher {
    sha256: Context,
    md5: Option<Md5>,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub md5: Option<String>,
    pub size: u64,
}

impl StreamHasher {
    pub fn new(with_md5: bool) -> Self {
        StreamHasher {
            sha256: Context::new(&SHA256),
            md5: with_md5.then(Md5::new),
            bytes: 0,
        }
    }

    pub fn update(&mut self, buf: &[u8]) {
        self.sha256.update(buf);
        if let Some(m) = &mut self.md5 {
            m.update(buf);
        }
        self.bytes += buf.len() as u64;
    }

    pub fn finish(self) -> Digests {
        Digests {
            sha256: hex::encode(self.sha256.finish().as_ref()),
            md5: self.md5.map(|m| hex::encode(m.finalize())),
            size: self.bytes,
        }
    }

    /// Feed everything `r` yields; `on_chunk` sees each chunk's length (progress bars).
    pub fn consume(
        &mut self,
        mut r: impl Read,
        path: &Path,
        mut on_chunk: impl FnMut(u64),
    ) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).at(path),
            };
            self.update(&buf[..n]);
            on_chunk(n as u64);
        }
    }
}

/// Hash a whole file (sha256, and md5 when asked).
pub fn hash_file(path: &Path, with_md5: bool, on_chunk: impl FnMut(u64)) -> Result<Digests> {
    let f = std::fs::File::open(path).at(path)?;
    let mut h = StreamHasher::new(with_md5);
    h.consume(f, path, on_chunk)?;
    Ok(h.finish())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&SHA256, bytes).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        // FIPS 180-2 "abc" and RFC 1321 "abc".
        let mut h = StreamHasher::new(true);
        h.update(b"a");
        h.update(b"bc");
        let d = h.finish();
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.md5.as_deref(), Some("900150983cd24fb0d6963f7d28e17f72"));
        assert_eq!(d.size, 3);
    }

    #[test]
    fn agrees_with_sha2_on_odd_chunking() {
        use sha2::{Digest as _, Sha256};
        let data: Vec<u8> = (0..1_000_003u32)
            .map(|i| (i.wrapping_mul(2654435761u32) >> 13) as u8)
            .collect();
        let mut h = StreamHasher::new(false);
        for c in data.chunks(4093) {
            h.update(c);
        }
        assert_eq!(h.finish().sha256, hex::encode(Sha256::digest(&data)));
    }
}
