//! Shared helpers for the data tests: a loopback HTTP server with fault injection, fixture archives in the
//! real layouts, manifests pointing at the server, and a runner for the `contracam` binary.
#![allow(dead_code)]
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

#[derive(Clone, Debug, PartialEq)]
pub enum Behavior {
    Normal,
    /// The next GET gets the full headers but only this many body bytes, then the connection is closed.
    CutOnce(usize),
    /// Always answer 200 with the whole body, whatever Range says.
    IgnoreRange,
    /// Honour Range but ignore If-Range (answers 206 even when the validator changed).
    IgnoreIfRange,
    Status(u16),
    /// The next GET gets an HTML page (text/html, 200), then the file as usual.
    HtmlOnce,
    /// The next GET gets this status with `Retry-After: <value>`, then the file as usual.
    StatusOnceRetryAfter(u16, String),
}

#[derive(Clone, Debug)]
pub struct Served {
    pub body: Vec<u8>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub content_type: String,
    pub behavior: Behavior,
}

impl Served {
    pub fn file(body: Vec<u8>) -> Served {
        let etag = Some(format!("\"{}\"", &sha256(&body)[..16]));
        Served {
            body,
            etag,
            last_modified: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
            content_type: "application/octet-stream".into(),
            behavior: Behavior::Normal,
        }
    }
    pub fn with(mut self, b: Behavior) -> Served {
        self.behavior = b;
        self
    }
}

#[derive(Clone, Debug)]
pub struct Req {
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub status: u16,
    pub body_bytes_sent: usize,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Served>,
    log: Vec<Req>,
}

pub struct Server {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().unwrap().port();
        let state: Arc<Mutex<State>> = Arc::default();
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || handle(conn, st));
            }
        });
        Server { port, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn put(&self, path: &str, s: Served) {
        self.state.lock().unwrap().files.insert(path.to_string(), s);
    }

    pub fn log(&self) -> Vec<Req> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
}

fn handle(mut conn: TcpStream, st: Arc<Mutex<State>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let mut headers: HashMap<String, String> = HashMap::new();
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l).is_err() || l.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
    let range = headers.get("range").cloned();
    let if_range = headers.get("if-range").cloned();
    let served = {
        let mut s = st.lock().unwrap();
        let f = s.files.get(&path).cloned();
        if let Some(Served {
            behavior: Behavior::CutOnce(_) | Behavior::HtmlOnce | Behavior::StatusOnceRetryAfter(..),
            ..
        }) = &f
        {
            s.files.get_mut(&path).unwrap().behavior = Behavior::Normal;
        }
        f
    };
    let mut log = Req {
        path: path.clone(),
        range: range.clone(),
        if_range: if_range.clone(),
        status: 0,
        body_bytes_sent: 0,
    };
    let Some(f) = served else {
        log.status = 404;
        // Logged before responding: the client may send its next request as soon as it reads this one.
        st.lock().unwrap().log.push(log);
        let _ = conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
        );
        return;
    };
    if let Behavior::StatusOnceRetryAfter(code, after) = &f.behavior {
        log.status = *code;
        st.lock().unwrap().log.push(log);
        let _ = write!(
            conn,
            "HTTP/1.1 {code} Busy\r\nRetry-After: {after}\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy"
        );
        return;
    }
    if f.behavior == Behavior::HtmlOnce {
        let page = "<!DOCTYPE html><html><body>Quota exceeded, try again later</body></html>";
        log.status = 200;
        st.lock().unwrap().log.push(log);
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        );
        return;
    }
    if let Behavior::Status(code) = f.behavior {
        log.status = code;
        st.lock().unwrap().log.push(log);
        let _ = write!(
            conn,
            "HTTP/1.1 {code} Nope\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"
        );
        return;
    }
    let len = f.body.len();
    let validator_ok = match &if_range {
        None => true,
        Some(v) => {
            f.behavior == Behavior::IgnoreIfRange
                || Some(v) == f.etag.as_ref()
                || Some(v) == f.last_modified.as_ref()
        }
    };
    let start = match (&range, &f.behavior) {
        (Some(r), b) if *b != Behavior::IgnoreRange && validator_ok => r
            .strip_prefix("bytes=")
            .and_then(|x| x.strip_suffix('-'))
            .and_then(|x| x.parse::<usize>().ok()),
        _ => None,
    };
    if let Some(s) = start {
        if s >= len {
            log.status = 416;
            st.lock().unwrap().log.push(log);
            let _ = write!(conn, "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
    }
    let mut head = String::new();
    let body: &[u8] = match start {
        Some(s) if s < len => {
            log.status = 206;
            head += "HTTP/1.1 206 Partial Content\r\n";
            head += &format!("Content-Range: bytes {}-{}/{}\r\n", s, len - 1, len);
            &f.body[s..]
        }
        _ => {
            log.status = 200;
            head += "HTTP/1.1 200 OK\r\n";
            &f.body[..]
        }
    };
    head += &format!(
        "Content-Length: {}\r\nContent-Type: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
        body.len(),
        f.content_type
    );
    if let Some(e) = &f.etag {
        head += &format!("ETag: {e}\r\n");
    }
    if let Some(l) = &f.last_modified {
        head += &format!("Last-Modified: {l}\r\n");
    }
    head += "\r\n";
    let n = match f.behavior {
        Behavior::CutOnce(n) => n.min(body.len()),
        _ => body.len(),
    };
    log.body_bytes_sent = n;
    st.lock().unwrap().log.push(log);
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body[..n]);
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Both);
    // Drain anything left so the close is clean.
    let mut sink = [0u8; 64];
    let _ = reader.get_mut().read(&mut sink);
}

pub fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Deterministic pseudo-random bytes (incompressible enough for transfer tests).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// Archives.

pub enum Entry {
    File(String, Vec<u8>),
    Dir(String),
    Symlink(String, String),
}

pub fn file(p: &str, b: impl Into<Vec<u8>>) -> Entry {
    Entry::File(p.to_string(), b.into())
}

fn tar_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            Entry::File(p, data) => {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
            Entry::Dir(p) => {
                let mut h = tar::Header::new_gnu();
                h.set_size(0);
                h.set_mode(0o755);
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Entry::Symlink(p, target) => {
                let mut h = tar::Header::new_gnu();
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn tar(entries: &[Entry]) -> Vec<u8> {
    tar_bytes(entries)
}

pub fn tar_gz(entries: &[Entry]) -> Vec<u8> {
    gzip(&tar_bytes(entries))
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

pub fn zip(entries: &[Entry]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for e in entries {
        match e {
            Entry::File(p, data) => {
                w.start_file(p.as_str(), opts).unwrap();
                w.write_all(data).unwrap();
            }
            Entry::Dir(p) => {
                w.add_directory(p.as_str(), opts).unwrap();
            }
            Entry::Symlink(p, t) => {
                w.add_symlink(p.as_str(), t.as_str(), opts).unwrap();
            }
        }
    }
    w.finish().unwrap().into_inner()
}

/// A tar with one raw header whose name (and type, link target) are written byte for byte, bypassing the
/// tar crate's path checks: for absolute-path, `..`, device and link-escape fixtures.
pub fn raw_tar_entry(name: &str, kind: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        old.linkflag[0] = kind;
    }
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

// ---------------------------------------------------------------------------------------------------------
// Images.

pub fn jpeg(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x as u8).wrapping_mul(7) ^ seed,
            (y as u8).wrapping_mul(5),
            seed,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

pub fn png_gray(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

pub fn png_rgb(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

// ---------------------------------------------------------------------------------------------------------
// Manifests and the CLI.

pub struct FixtureFile {
    pub name: String,
    pub body: Vec<u8>,
    /// Publish sha256 (true) or leave the file unverified (false).
    pub checksum: bool,
}

pub fn ff(name: &str, body: Vec<u8>) -> FixtureFile {
    FixtureFile {
        name: name.into(),
        body,
        checksum: true,
    }
}

/// Serve the files at `/<dataset>/<name>` and write a manifest for them (with sizes and sha256).
pub fn serve_dataset(
    server: &Server,
    dir: &Path,
    dataset: &str,
    builder: Option<&str>,
    files: Vec<FixtureFile>,
) -> PathBuf {
    let mut toml = format!("[dataset]\nname = \"{dataset}\"\ntitle = \"fixture {dataset}\"\n");
    if let Some(b) = builder {
        toml += &format!("builder = \"{b}\"\n");
    }
    for f in files {
        let path = format!("/{dataset}/{}", f.name);
        toml += &format!(
            "\n[[files]]\nname = \"{}\"\nurls = [\"{}\"]\n",
            f.name,
            server.url(&path)
        );
        if f.checksum {
            toml += &format!(
                "size = {}\nsha256 = \"{}\"\n",
                f.body.len(),
                sha256(&f.body)
            );
        }
        server.put(&path, Served::file(f.body));
    }
    let p = dir.join(format!("{dataset}.toml"));
    std::fs::write(&p, toml).unwrap();
    p
}

pub fn contracam(args: &[&str]) -> Output {
    let out = assert_cmd::Command::cargo_bin("contracam")
        .unwrap()
        .args(args)
        .env("CONTRACAM_LOG", "error")
        .output()
        .unwrap();
    out
}

pub fn run_ok(args: &[&str]) -> String {
    let o = contracam(args);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "contracam {args:?} failed:\n{}\n{}",
        stdout,
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

pub fn run_err(args: &[&str]) -> String {
    let o = contracam(args);
    assert!(
        !o.status.success(),
        "contracam {args:?} should have failed:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Arguments of `contracam data CMD NAME` on a fixture manifest: quiet, one thread (`build`, the only one
/// that takes `--threads`), short retry delay and timeout, then `extra`.
pub fn data_args<'a>(
    cmd: &'a str,
    name: &'a str,
    manifest: &'a Path,
    data_dir: &'a Path,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "data",
        cmd,
        name,
        "--quiet",
        "--manifest",
        manifest.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--retry-delay-ms",
        "10",
        "--timeout-s",
        "10",
    ];
    if cmd == "build" {
        args.extend_from_slice(&["--threads", "1"]);
    }
    args.extend_from_slice(extra);
    args
}

/// Where `data fetch` puts a dataset's downloads.
pub fn downloads(data_dir: &Path, dataset: &str) -> PathBuf {
    data_dir.join(dataset).join("downloads")
}

/// `data build` on a fixture manifest; returns stdout.
pub fn build(manifest: &Path, data_dir: &Path, name: &str, extra: &[&str]) -> String {
    run_ok(&data_args("build", name, manifest, data_dir, extra))
}

/// `data build` that must fail; returns stderr.
pub fn build_err(manifest: &Path, data_dir: &Path, name: &str) -> String {
    run_err(&data_args("build", name, manifest, data_dir, &[]))
}

/// Serve `files` as the fixture dataset `dataset` (built by the builder of the same name) and run a
/// `data build` that must fail; returns stderr.
pub fn build_err_serving(dataset: &str, files: Vec<FixtureFile>) -> String {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let m = serve_dataset(&srv, tmp.path(), dataset, Some(dataset), files);
    build_err(&m, &tmp.path().join("d"), dataset)
}

pub fn read_index(
    data_dir: &Path,
    dataset: &str,
    split: &str,
) -> contracam::data::index::SplitIndex {
    contracam::data::index::SplitIndex::read(
        &data_dir
            .join(dataset)
            .join("index")
            .join(format!("{split}.jsonl")),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A zip of `<split>2017/<id:012>.jpg` for each id, 40×30 JPEGs (the k-th image drawn with seed k + 1), as
/// COCO's image archives are laid out.
pub fn coco_images(split: &str, ids: &[u64]) -> Vec<u8> {
    let entries: Vec<Entry> = ids
        .iter()
        .enumerate()
        .map(|(k, id)| {
            file(
                &format!("{split}2017/{id:012}.jpg"),
                jpeg(40, 30, k as u8 + 1),
            )
        })
        .collect();
    zip(&entries)
}

/// Serves a COCO 2017 release (the train images, the val images when given, and the annotations zip) with
/// the `coco` builder and writes its manifest into `dir`.
pub fn serve_coco(
    server: &Server,
    dir: &Path,
    train_images: Vec<u8>,
    val_images: Option<Vec<u8>>,
    annotations: Vec<u8>,
) -> PathBuf {
    let mut files = vec![ff("train2017.zip", train_images)];
    if let Some(v) = val_images {
        files.push(ff("val2017.zip", v));
    }
    files.push(ff("annotations_trainval2017.zip", annotations));
    serve_dataset(server, dir, "coco2017", Some("coco"), files)
}
