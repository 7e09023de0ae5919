//! Localization: contrastive CAM, masks and boxes.
pub mod boxes;
pub mod contrastive_cam;
pub mod mask_clean;

pub use contrastive_cam::{contrastive_cam, contrastive_cam_traced, CamConfig, CamError};
