//! Image operations with exact OpenCV/PIL semantics, shared by `localize` and `eval`
//! (contours for boxes and MaxBoxAccV2, connected components for mask cleaning, resizing).
pub mod components;
pub mod contours;
pub mod resize;
