//! Image operations with exact OpenCV/PIL/pycocotools semantics, shared by `data`, `localize` and `eval`
//! (contours for boxes and MaxBoxAccV2, connected components for mask cleaning, resizing, COCO RLE masks).
pub mod components;
pub mod contours;
pub mod resize;
pub mod rle;
pub mod segmentation;
