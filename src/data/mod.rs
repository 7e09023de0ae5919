//! data layer.
