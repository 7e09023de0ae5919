//! Localization: contrastive CAM, dense CRF, mask cleaning and boxes, and their dataset pipelines.
pub mod bench;
pub mod boxes;
pub mod classifier_cam;
pub mod contrastive_cam;
pub mod crf;
pub mod dataset;
pub mod mask_clean;
pub mod overlay;
pub mod postprocess;

pub use contrastive_cam::{contrastive_cam, contrastive_cam_traced, CamConfig, CamError};
