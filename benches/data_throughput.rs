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

use contracam::data::source::download::{
    download_file, http_client, DownloadOptions, FileJob, Progress,
};
use contracam::data::source::hash::{hash_file, StreamHasher};
use contracam::data::source::manifest::ChecksumKind;
use contracam::data::source::store::{DatasetDir, Expected};

fn gbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

fn best_of<F: FnMut() -> f64>(n: usize, mut f: F) -> f64 {
    (0..n).map(|_| f()).fold(f64::INFINITY, f64::min)
}
/// CPU seconds used by this process (user + system).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// `openssl speed` reports user CPU time by default; `-elapsed` switches it to wall-clock time.
fn openssl_sha256(elapsed: bool) -> Option<f64> {
    let mut args = vec![
        "speed", "-evp", "sha256", "-bytes", "16384", "-seconds", "3",
    ];
    if elapsed {
        args.push("-elapsed");
    }
    let o = Command::new("openssl").args(&args).output().ok()?;
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

    // The machine may be shared: interleave the measurements and keep the best of each.
    let mem: Vec<u8> = std::fs::read(&path)
        .expect("read")
        .into_iter()
        .take(256 << 20)
        .collect();
    let inf = f64::INFINITY;
    let (mut ours, mut ours_mem, mut ours_cpu, mut sum) = (inf, inf, inf, inf);
    let (mut ossl_cpu, mut ossl_wall) = (0.0f64, 0.0f64);
    for _ in 0..3 {
        let t = Instant::now();
        let d = hash_file(&path, false, |_| {}).expect("hash");
        ours = ours.min(t.elapsed().as_secs_f64());
        assert_eq!(d.sha256, digest);
        let (t, c) = (Instant::now(), cpu_seconds());
        let mut h = StreamHasher::new(false);
        for c in mem.chunks(1 << 20) {
            h.update(c);
        }
        std::hint::black_box(h.finish());
        ours_mem = ours_mem.min(t.elapsed().as_secs_f64());
        ours_cpu = ours_cpu.min(cpu_seconds() - c);
        let t = Instant::now();
        let o = Command::new("sha256sum")
            .arg(&path)
            .output()
            .expect("sha256sum");
        sum = sum.min(t.elapsed().as_secs_f64());
        assert!(
            String::from_utf8_lossy(&o.stdout).starts_with(&digest),
            "sha256sum disagrees"
        );
        ossl_cpu = ossl_cpu.max(openssl_sha256(false).unwrap_or(0.0));
        ossl_wall = ossl_wall.max(openssl_sha256(true).unwrap_or(0.0));
    }
    let ours_g = gbps(bytes, ours);
    let mem_g = gbps(mem.len() as u64, ours_mem);
    let cpu_g = gbps(mem.len() as u64, ours_cpu);
    let sum_g = gbps(bytes, sum);
    println!("file: {mib} MiB (page-cached); best of 3 interleaved runs");
    println!("contracam verify, file, wall:      {ours_g:.3} GB/s");
    println!(
        "sha256sum, file, wall:             {sum_g:.3} GB/s   ratio {:.2}x",
        ours_g / sum_g
    );
    println!("contracam sha256, memory, wall:    {mem_g:.3} GB/s");
    println!("contracam sha256, memory, CPU:     {cpu_g:.3} GB/s");
    if ossl_cpu > 0.0 {
        println!(
            "openssl speed sha256 16K, wall:    {ossl_wall:.3} GB/s   ratio (memory, wall) {:.2}x",
            mem_g / ossl_wall
        );
        println!("openssl speed sha256 16K, CPU:     {ossl_cpu:.3} GB/s   ratio (memory, CPU)  {:.2}x (target >= 0.9x)", cpu_g / ossl_cpu);
    } else {
        println!("openssl speed: not available");
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
