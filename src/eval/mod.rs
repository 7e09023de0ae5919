//! Metrics with reference parity: mask mIoU, MaxBoxAcc(V2), COCO AP, Background Challenge, linear
//! evaluation, plus the box recall and feature extraction the synthetic pipeline uses. Each module documents
//! which reference implementation it reproduces. `coco`, `maxboxacc`, `miou` and `error` live in the
//! torch-free `contracam_base` and are re-exported here at the same paths.
pub mod bench;
pub mod bgchallenge;
pub mod box_recall;
pub use contracam_base::eval::coco;
pub mod dataset;
pub mod encode;
pub mod error;
pub mod linear;
pub use contracam_base::eval::{maxboxacc, miou};

pub use error::EvalError;
