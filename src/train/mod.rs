//! Training, split as the official code is: `objective` (MoCo v2, BYOL), `augment` (geometric views,
//! object-aware crop, Kornia colour ops), `source` (what the loop consumes: batches of views), `fit` (the
//! loop), `strategy` (single device; the hooks a data-parallel strategy fills in), `distributed` (c10d
//! process groups, gradient reducer, SyncBN), `supervised` (the cross-entropy classifier), `precision`
//! (bf16 autocast, channels_last), `checkpoint` (what the training states of both loops share), `config`,
//! `error`, `alloc` (the allocator setting of a training process).
pub mod augment;
pub mod bench;
pub(crate) mod checkpoint;
pub mod config;
pub mod distributed;
pub mod error;
pub mod fit;
pub mod objective;
pub mod on_index;
pub mod precision;
pub mod rng_state;
pub mod source;
pub mod strategy;
pub mod supervised;

pub use config::TrainConfig;
pub use error::TrainError;
pub use fit::{train, TrainData, TrainReport, Trainer};
pub use on_index::{fit_source, train_on_index, Checkpointing};
pub use source::{Batch, BatchSource, InMemorySource, IndexBatchSource, IndexSourceOptions};
pub use strategy::{ExecutionStrategy, Shard, SingleDevice};
