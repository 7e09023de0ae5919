//! Shared test helpers.
#![allow(dead_code)]
use std::path::PathBuf;

/// The known-answer vectors: `$CONTRACAM_REFERENCE`, else `../shared/reference` beside the checkout.
/// Missing vectors fail the test (CI must not silently skip parity).
pub fn reference_dir() -> PathBuf {
    let dir = std::env::var_os("CONTRACAM_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference"));
    assert!(
        dir.is_dir(),
        "reference vectors not found at {}; set CONTRACAM_REFERENCE to the shared/reference directory",
        dir.display()
    );
    dir
}
