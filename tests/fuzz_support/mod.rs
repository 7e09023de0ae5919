//! Shared by the `tests/fuzz_*.rs` property tests of the parsers of untrusted bytes: how many cases to run,
//! byte-level mutations of a valid seed, and a run bound (time and largest allocation) around each case.
//!
//! Each fuzz test binary installs [`CapAlloc`] as its global allocator so that [`bounded`] can see the
//! largest single allocation a case made, and so that a runaway allocation aborts the test binary instead
//! of exhausting the machine's memory.
#![allow(dead_code)]
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;

/// The environment variable that sets the case count of every fuzz property (a nightly run sets it high).
pub const CASES_VAR: &str = "CONTRACAM_FUZZ_CASES";

/// Cases for one property: `$CONTRACAM_FUZZ_CASES` when set and not empty, else `default` (sized so that
/// each fuzz file runs in at most 20 s in release on one thread on a loaded 2-core machine).
pub fn cases(default: u32) -> u32 {
    match std::env::var(CASES_VAR) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{CASES_VAR}={v:?} is not a whole number of cases")),
        _ => default,
    }
}

/// proptest's configuration with [`cases`]; failures are persisted beside the test file
/// (`tests/<file>.proptest-regressions`) so a found crash is replayed first on the next run.
pub fn config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default_cases),
        ..ProptestConfig::default()
    }
}

/// A case that runs longer than this is a hang (the largest seeds parse in well under a millisecond).
pub const TIME_LIMIT: Duration = Duration::from_secs(10);
/// A case may not make a single allocation larger than this (the inputs are a few KiB).
pub const ALLOC_LIMIT: usize = 64 << 20;
/// Any single allocation past this fails (the binary aborts with "memory allocation of N bytes failed").
pub const HARD_ALLOC_CAP: usize = 1 << 30;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, noting the largest single request per thread and refusing any above
/// [`HARD_ALLOC_CAP`].
pub struct CapAlloc;

fn note(size: usize) -> bool {
    // `try_with`: allocations during thread teardown have no slot left; they are not counted.
    let _ = LARGEST.try_with(|c| {
        if size > c.get() {
            c.set(size)
        }
    });
    size <= HARD_ALLOC_CAP
}

unsafe impl GlobalAlloc for CapAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if note(layout.size()) {
            unsafe { System.alloc(layout) }
        } else {
            std::ptr::null_mut()
        }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if note(layout.size()) {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            std::ptr::null_mut()
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if note(new_size) {
            unsafe { System.realloc(ptr, layout, new_size) }
        } else {
            std::ptr::null_mut()
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs one case on its own thread and returns its result; panics (failing the property) when the case
/// panicked, ran past [`TIME_LIMIT`], or made a single allocation larger than [`ALLOC_LIMIT`].
pub fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        LARGEST.with(|c| c.set(0));
        let r = f();
        let largest = LARGEST.with(|c| c.get());
        let _ = tx.send((r, largest));
    });
    match rx.recv_timeout(TIME_LIMIT) {
        Ok((r, largest)) => {
            assert!(
                largest <= ALLOC_LIMIT,
                "{what}: one allocation of {largest} bytes (limit {ALLOC_LIMIT})"
            );
            r
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after {TIME_LIMIT:?} (a hang)")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("{what}: panicked (message above)")
        }
    }
}

/// One byte-level edit of a seed input.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// XOR a byte with a non-zero mask (bit flips).
    Flip(Index, u8),
    /// Overwrite 4 bytes with an edge-case little-endian word (lengths, counts, offsets).
    Word(Index, u32),
    /// Cut the input at a point.
    Truncate(Index),
    /// Insert arbitrary bytes.
    Insert(Index, Vec<u8>),
    /// Remove a run of bytes.
    Remove(Index, u8),
    /// Copy a run of the input to another place (duplicated structure).
    Splice { from: Index, len: u8, to: Index },
}

fn edge_word() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(0x7f),
        Just(0xff),
        Just(0xffff),
        Just(0x7fff_ffff),
        Just(0x8000_0000),
        Just(u32::MAX),
        0u32..64,
        any::<u32>(),
    ]
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        2 => (any::<Index>(), edge_word()).prop_map(|(i, w)| Mutation::Word(i, w)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1u8..32).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (any::<Index>(), 1u8..64, any::<Index>())
            .prop_map(|(from, len, to)| Mutation::Splice { from, len, to }),
    ]
}

/// One to `max` mutations.
pub fn mutations(max: usize) -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 1..=max)
}

/// `seed` with `ms` applied in order.
pub fn apply(seed: &[u8], ms: &[Mutation]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for m in ms {
        if b.is_empty() {
            if let Mutation::Insert(_, x) = m {
                b.extend_from_slice(x);
            }
            continue;
        }
        match m {
            Mutation::Flip(i, x) => {
                let i = i.index(b.len());
                b[i] ^= x;
            }
            Mutation::Word(i, w) => {
                let i = i.index(b.len());
                for (k, byte) in w.to_le_bytes().into_iter().enumerate() {
                    if let Some(slot) = b.get_mut(i + k) {
                        *slot = byte;
                    }
                }
            }
            Mutation::Truncate(i) => b.truncate(i.index(b.len())),
            Mutation::Insert(i, x) => {
                let i = i.index(b.len() + 1);
                b.splice(i..i, x.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let i = i.index(b.len());
                let end = (i + *n as usize).min(b.len());
                b.drain(i..end);
            }
            Mutation::Splice { from, len, to } => {
                let f = from.index(b.len());
                let chunk: Vec<u8> = b[f..(f + *len as usize).min(b.len())].to_vec();
                let t = to.index(b.len() + 1);
                b.splice(t..t, chunk);
            }
        }
    }
    b
}

/// Arbitrary bytes of up to `max` length.
pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}
