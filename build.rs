//! Embeds an rpath to libtorch's lib dir so the binaries, tests and examples run without LD_LIBRARY_PATH,
//! and, with `--features cuda`, force-links libtorch_cuda into contracam-torch, tests and benches
//! (rustc passes --as-needed, which drops it; the `contracam` launcher must stay torch-free).
//! Compiles the c10d shim (`src/train/distributed/shim/`) and the autocast/memory-format shim
//! (`src/train/precision/shim/`) against libtorch's headers.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let cuda = std::env::var_os("CARGO_FEATURE_CUDA").is_some();
    let lib = std::env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from);
    // The rpath goes to every target (the library's unit tests have no link-arg kind of their own); in the
    // torch-free `contracam` launcher it is inert, as it links no libtorch library to look up.
    if let Some(lib) = &lib {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
    // --no-as-needed would put libtorch_cuda in every binary's NEEDED list, the launcher's included: only the
    // targets that link libtorch get it.
    if cuda {
        let arg = "-Wl,--no-as-needed,-ltorch_cuda,--as-needed";
        println!("cargo:rustc-link-arg-bin=contracam-torch={arg}");
        // (`-examples` too would be refused: Cargo rejects a link-arg kind the package has no target of.)
        for kind in ["tests", "benches"] {
            println!("cargo:rustc-link-arg-{kind}={arg}");
        }
    }
    match &lib {
        Some(lib) => {
            build_c10d_shim(lib, cuda);
            build_precision_shim(lib);
        }
        None => panic!(
            "torch-sys did not report libtorch's lib dir (DEP_TCH_LIBTORCH_LIB); set LIBTORCH"
        ),
    }
    // CONTRACAM_GIT_HASH set in the environment names the commit (a build from a source tarball without
    // `.git`, or a developer who does not want every commit to recompile the crate); otherwise git says.
    println!("cargo:rerun-if-env-changed=CONTRACAM_GIT_HASH");
    if let Some(hash) = std::env::var("CONTRACAM_GIT_HASH")
        .ok()
        .filter(|h| !h.trim().is_empty())
    {
        println!("cargo:rustc-env=CONTRACAM_GIT_HASH={}", hash.trim());
        return;
    }
    let hash = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CONTRACAM_GIT_HASH={hash}");
    // A commit changes the branch ref, not HEAD itself: watch both (and packed-refs) so the hash stays true.
    // `git rev-parse --git-path` finds them in a linked worktree too, where `.git` is a file (watching a
    // path that does not exist would rerun this script, and recompile the c10d shim, on every build).
    let git_path = |p: &str| {
        std::process::Command::new("git")
            .args(["rev-parse", "--git-path", p])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
    };
    if let Some(head) = git_path("HEAD") {
        println!("cargo:rerun-if-changed={}", head.display());
        if let Ok(text) = std::fs::read_to_string(&head) {
            if let Some(r) = text.strip_prefix("ref: ").and_then(|r| git_path(r.trim())) {
                if r.exists() {
                    println!("cargo:rerun-if-changed={}", r.display());
                }
            }
        }
    }
    if let Some(packed) = git_path("packed-refs").filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", packed.display());
    }
}

/// The c10d shim: C++17 against the headers of the libtorch that torch-sys links (`<lib>/../include`), with
/// the Gloo backend always and the NCCL backend in CUDA builds (headers from the wheel's `nvidia/` packages).
fn build_c10d_shim(lib: &Path, cuda: bool) {
    let dir = Path::new("src/train/distributed/shim");
    println!("cargo:rerun-if-changed={}", dir.display());
    // LIBTORCH may be a link to site-packages/torch (as .venv/libtorch is); the wheel's nvidia/ packages sit
    // beside the real directory.
    let lib = std::fs::canonicalize(lib).unwrap_or_else(|_| lib.to_path_buf());
    let torch = lib.parent().unwrap_or(&lib);
    let include = torch.join("include");
    if !include
        .join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp")
        .is_file()
    {
        panic!(
            "{} has no torch/csrc/distributed/c10d headers; contracam needs the full libtorch of the torch \
             2.11 wheel (make setup)",
            include.display()
        );
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .file(dir.join("c10d_shim.cpp"))
        .include(dir.join("gloo_decls"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("USE_C10D_GLOO", None)
        .define("GLOG_USE_GLOG_EXPORT", None)
        // libtorch's own headers warn a lot under -Wall; as system headers they stay quiet.
        .flag("-isystem")
        .flag(include.to_string_lossy().as_ref())
        .flag("-isystem")
        .flag(
            include
                .join("torch/csrc/api/include")
                .to_string_lossy()
                .as_ref(),
        );
    if cuda {
        // NCCL needs the CUDA runtime headers: the wheel's nvidia/cu13 (cudart) plus nvidia-cuda-crt's crt/
        // (`make setup-cuda`). Without them the CUDA build still links and runs, with Gloo for CUDA tensors.
        let nvidia = torch.parent().map(|p| p.join("nvidia"));
        let dirs: Vec<PathBuf> = ["cu13/include", "nccl/include"]
            .iter()
            .filter_map(|sub| nvidia.as_ref().map(|n| n.join(sub)))
            .collect();
        let complete = dirs.iter().all(|d| d.is_dir())
            && dirs[0].join("crt/host_config.h").is_file()
            && dirs[1].join("nccl.h").is_file();
        if complete {
            for d in &dirs {
                build.flag("-isystem").flag(d.to_string_lossy().as_ref());
            }
            build
                .define("USE_C10D_NCCL", None)
                .define("USE_CUDA", None)
                .define("CONTRACAM_WITH_NCCL", None);
            println!("cargo:rustc-link-lib=dylib=c10_cuda");
        } else {
            println!(
                "cargo:warning=NCCL backend not compiled: CUDA/NCCL headers missing under {} (needs \
                 cu13/include/crt/host_config.h from nvidia-cuda-crt and nccl/include/nccl.h; run make \
                 setup-cuda); data-parallel CUDA runs will use Gloo",
                nvidia.as_deref().unwrap_or(Path::new("?")).display()
            );
        }
        for d in &dirs {
            println!("cargo:rerun-if-changed={}", d.display());
        }
    }
    compile_once(dir, &build, "contracam_c10d");
}

/// The autocast and memory-format shim (`src/train/precision/shim/`): C++17 against the same headers and ABI
/// as the c10d shim, but a library of its own (it needs no c10d header or define, and an edit of one shim
/// does not recompile the other).
fn build_precision_shim(lib: &Path) {
    let dir = Path::new("src/train/precision/shim");
    println!("cargo:rerun-if-changed={}", dir.display());
    let lib = std::fs::canonicalize(lib).unwrap_or_else(|_| lib.to_path_buf());
    let include = lib.parent().unwrap_or(&lib).join("include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .file(dir.join("precision_shim.cpp"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag("-isystem")
        .flag(include.to_string_lossy().as_ref())
        .flag("-isystem")
        .flag(
            include
                .join("torch/csrc/api/include")
                .to_string_lossy()
                .as_ref(),
        );
    compile_once(dir, &build, "contracam_precision");
}

/// Compiles `build` into the static library `name`, or links the one already built when neither the sources
/// under `dir` nor the flags changed: this script also reruns when the git commit changes, and a shim compile
/// costs a minute of C++ against libtorch's headers.
fn compile_once(dir: &Path, build: &cc::Build, name: &str) {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let stamp = out.join(format!("{name}.stamp"));
    let fingerprint = shim_fingerprint(dir, build);
    let archive = out.join(format!("lib{name}.a"));
    if archive.is_file()
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(fingerprint.as_str())
    {
        println!("cargo:rustc-link-search=native={}", out.display());
        println!("cargo:rustc-link-lib=static={name}");
        println!("cargo:rustc-link-lib=stdc++");
        return;
    }
    build.compile(name);
    if let Err(e) = std::fs::write(&stamp, fingerprint) {
        println!(
            "cargo:warning=could not record the build stamp of {name} {}: {e}",
            stamp.display()
        );
    }
}

/// Sources under `dir` (names and contents) and the compiler command the build would run.
fn shim_fingerprint(dir: &Path, build: &cc::Build) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    for f in &files {
        f.hash(&mut h);
        std::fs::read(f).unwrap_or_default().hash(&mut h);
    }
    let cmd = build.get_compiler().to_command();
    format!("{cmd:?}").hash(&mut h);
    for var in ["CXX", "CXXFLAGS", "OPT_LEVEL", "TARGET", "PROFILE"] {
        std::env::var(var).ok().hash(&mut h);
    }
    format!("{:016x}\n", h.finish())
}
