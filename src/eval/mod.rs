//! Metrics with reference parity: mask mIoU, MaxBoxAcc(V2), COCO AP, Background Challenge, linear
//! evaluation, plus the box recall and feature extraction the synthetic pipeline uses. Each module documents
//! which reference implementation it reproduces.
pub mod bench;
pub mod bgchallenge;
pub mod box_recall;
pub mod coco;
pub mod dataset;
pub mod encode;
pub mod error;
pub mod linear;
pub mod maxboxacc;
pub mod miou;

pub use error::EvalError;
