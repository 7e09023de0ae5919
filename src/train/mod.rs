//! train layer.
