//! Resizing with OpenCV and PIL semantics.
