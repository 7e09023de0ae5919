//! Seeded randomness. Every random choice in contracam flows from one run seed: CPU-side choices use a
//! ChaCha RNG derived from (seed, purpose), tensor randomness uses `tch::manual_seed`.
use std::sync::{Mutex, MutexGuard};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// An RNG for one named purpose, so adding a random draw in one place never shifts another's stream.
pub fn rng_for(seed: u64, purpose: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive_seed(seed, purpose))
}

/// A 64-bit seed derived from the run seed and a purpose label.
pub fn derive_seed(seed: u64, purpose: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(purpose.as_bytes());
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("sha256 has 32 bytes"))
}

/// Seeds libtorch's generators (CPU and CUDA) for a run stage.
pub fn seed_torch(seed: u64, purpose: &str) {
    tch::manual_seed(derive_seed(seed, purpose) as i64 & i64::MAX);
}

static TORCH_RNG: Mutex<()> = Mutex::new(());

/// Exclusive use of libtorch's process-global generator. Anything that seeds it and then draws from it
/// (initialisation, queues) holds this for the whole computation, so two such computations in one
/// process (threads, parallel tests) cannot interleave their draws and stay deterministic.
pub fn torch_rng_lock() -> MutexGuard<'static, ()> {
    TORCH_RNG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
