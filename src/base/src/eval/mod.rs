//! The pure-Rust metrics with reference parity: COCO AP/AR, MaxBoxAccV2 and mask mIoU.
pub mod coco;
pub mod error;
pub mod maxboxacc;
pub mod miou;

pub use error::EvalError;
