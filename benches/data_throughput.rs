//! Verification and loopback-download throughput of the data layer, with ratios against named baselines.
//!
//!   cargo bench --bench data_throughput            # 1 GiB file (CONTRACAM_BENCH_MIB to change)
//!
//! Baselines: `sha256sum` on the same file, and the SHA-NI limit `openssl speed -evp sha256 -bytes 16384`.
//! The target is >= 0.9x the openssl figure. Download throughput is measured over 127.0.0.1 against a
//! minimal HTTP server (hashing while streaming, as `data fetch` does).
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Instant;

use contracam::data::download::{download_file, http_client, DownloadOptions, FileJob, Progress};
use contracam::data::hash::hash_file;
use contracam::data::manifest::ChecksumKind;
use contracam::data::store::{DatasetDir, Expected};

fn gbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

fn best_of<F: FnMut() -> f64>(n: usize, mut f: F) -> f64 {
    (0..n).map(|_| f()).fold(f64::INFINITY, f64::min)
}

fn openssl_sha256() -> Option<f64> {
    let o = Command::new("openssl")
        .args([
            "speed", "-evp", "sha256", "-bytes", "16384", "-seconds", "3",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&o.stdout);
    // Last line: "sha256  <bytes per second in 1000s>k"
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("sha256") || l.trim_start().starts_with("SHA256"))?;
    let v = line
        .split_whitespace()
        .last()?
        .trim_end_matches('k')
        .parse::<f64>()
        .ok()?;
    Some(v * 1000.0 / 1e9)
}

fn main() {
    let mib: u64 = std::env::var("CONTRACAM_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let bytes = mib << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("blob.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for c in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
            }
            f.write_all(&buf).expect("write");
        }
    }
    // Warm the page cache so both tools read from memory.
    let digest = hash_file(&path, false, |_| {}).expect("hash").sha256;

    let ours = best_of(3, || {
        let t = Instant::now();
        let d = hash_file(&path, false, |_| {}).expect("hash");
        assert_eq!(d.sha256, digest);
        t.elapsed().as_secs_f64()
    });
    let sum = best_of(3, || {
        let t = Instant::now();
        let o = Command::new("sha256sum")
            .arg(&path)
            .output()
            .expect("sha256sum");
        let s = t.elapsed().as_secs_f64();
        assert!(
            String::from_utf8_lossy(&o.stdout).starts_with(&digest),
            "sha256sum disagrees"
        );
        s
    });
    let ours_g = gbps(bytes, ours);
    let sum_g = gbps(bytes, sum);
    println!("file: {mib} MiB (page-cached), best of 3");
    println!("contracam sha256 (sha2 0.10):   {ours_g:.3} GB/s");
    println!(
        "sha256sum:                      {sum_g:.3} GB/s   ratio {:.2}x",
        ours_g / sum_g
    );
    match openssl_sha256() {
        Some(o) => println!(
            "openssl speed -evp sha256 16K:  {o:.3} GB/s   ratio {:.2}x (target >= 0.9x)",
            ours_g / o
        ),
        None => println!("openssl speed: not available"),
    }

    // Loopback download: a tiny server streams the file; the client hashes while writing to disk.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let served = path.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut c = conn;
            let mut r = BufReader::new(c.try_clone().expect("clone"));
            let mut l = String::new();
            while r.read_line(&mut l).map(|n| n > 2).unwrap_or(false) {
                l.clear();
            }
            let len = std::fs::metadata(&served).expect("meta").len();
            let _ = write!(c, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n");
            let mut f = std::fs::File::open(&served).expect("open");
            let _ = std::io::copy(&mut f, &mut c);
        }
    });
    let opts = DownloadOptions::default();
    let client = http_client(&opts).expect("client");
    let dl = best_of(2, || {
        let root = tempfile::tempdir_in(dir.path()).expect("tmp");
        let ds = DatasetDir::new(root.path(), "bench");
        let job = FileJob {
            dataset: "bench",
            name: "blob.bin",
            dir: &ds,
            expected: Expected {
                kind: ChecksumKind::Sha256,
                size: Some(bytes),
                sha256: Some(digest.clone()),
                md5: None,
            },
            urls: vec![format!("http://127.0.0.1:{port}/blob.bin")],
            register: false,
        };
        let t = Instant::now();
        download_file(&client, &job, &opts, &Progress::hidden()).expect("download");
        t.elapsed().as_secs_f64()
    });
    println!(
        "loopback download+sha256+write: {:.3} GB/s",
        gbps(bytes, dl)
    );
}
