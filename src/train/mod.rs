//! Training: MoCo v2, BYOL, augmentations, object-aware random crop.
pub mod augment;
pub mod trainer;
