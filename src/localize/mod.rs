//! Localization: contrastive CAM, masks and boxes.
pub mod contrastive_cam;

pub use contrastive_cam::{contrastive_cam, contrastive_cam_traced, CamConfig, CamError};
