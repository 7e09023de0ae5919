//! suite layer.
