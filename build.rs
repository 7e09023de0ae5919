//! Embeds an rpath to libtorch's lib dir so the binary, tests and examples run without LD_LIBRARY_PATH,
//! and, with `--features cuda`, force-links libtorch_cuda (rustc passes --as-needed, which drops it).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.to_string_lossy());
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let hash = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CONTRACAM_GIT_HASH={hash}");
    // A commit changes the branch ref, not HEAD itself: watch HEAD and the ref it names, so the hash stays
    // true. In a worktree `.git` is a file and the refs live in the common git dir, so ask git where they
    // are; and name only files that exist, because cargo reruns a build script (and so rebuilds the whole
    // crate) on every invocation when a watched path is missing.
    let dirs = git(&["rev-parse", "--git-dir"]).zip(git(&["rev-parse", "--git-common-dir"]));
    if let Some((git_dir, common_dir)) = dirs {
        let (git_dir, common_dir) = (
            std::path::Path::new(&git_dir),
            std::path::Path::new(&common_dir),
        );
        let mut watch = vec![git_dir.join("HEAD"), common_dir.join("packed-refs")];
        if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD")) {
            if let Some(r) = head.strip_prefix("ref: ") {
                watch.push(common_dir.join(r.trim()));
            }
        }
        for p in watch.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}
