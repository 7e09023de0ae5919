//! libtorch errors at the boundary. tch's infallible tensor ops panic with libtorch's C++ message (and a
//! frame dump); the `f_*` ops return it. [`catch_torch`] runs a block of infallible ops and turns such a
//! panic into an error carrying the first lines of the message, printed once, without the frame dump or
//! Rust's panic banner. Validate inputs first: this is the last line of defence, not the first.
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

#[derive(Debug, thiserror::Error)]
#[error("{what}: libtorch refused it: {msg}")]
pub struct TorchError {
    pub what: String,
    pub msg: String,
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

static HOOK: Once = Once::new();

/// Runs `f`; a panic inside it (a libtorch error from an infallible tch op) becomes a [`TorchError`]
/// about `what`.
pub fn catch_torch<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, TorchError> {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    r.map_err(|payload| {
        let raw = payload
            .downcast_ref::<String>()
            .map(|s| s.as_str())
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("unknown error");
        TorchError {
            what: what.into(),
            msg: clean_message(raw),
        }
    })
}

/// The useful part of a libtorch error: what precedes "Exception raised from" and the frame list, on
/// one line, without tch's `Torch("...")` wrapper.
pub fn clean_message(raw: &str) -> String {
    let s = raw
        .split("Exception raised from")
        .next()
        .unwrap_or(raw)
        .trim();
    let s = s
        .strip_prefix("called `Result::unwrap()` on an `Err` value: ")
        .unwrap_or(s);
    let s = s
        .strip_prefix("Torch(\"")
        .map(|r| r.trim_end_matches("\")"))
        .unwrap_or(s);
    let s = s.replace("\\n", " ").replace('\n', " ");
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn a_libtorch_error_becomes_one_line() {
        let a = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
        let b = Tensor::zeros([4, 5], (Kind::Float, tch::Device::Cpu));
        let e = catch_torch("multiplying", || a.matmul(&b)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("multiplying: libtorch refused it: "),
            "{msg}"
        );
        assert!(msg.contains("2x3") && msg.contains("4x5"), "{msg}");
        assert!(!msg.contains("frame #") && !msg.contains('\n'), "{msg}");
        let ok = catch_torch("adding", || (&a + 1).sum(Kind::Float).double_value(&[]));
        assert_eq!(ok.unwrap(), 6.0);
    }
}
