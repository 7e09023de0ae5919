//! localize layer.
