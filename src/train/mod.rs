//! Training: MoCo v2, BYOL, augmentations, object-aware random crop, data-parallel execution.
pub mod augment;
pub mod distributed;
pub mod trainer;
