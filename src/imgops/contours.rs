//! Suzuki–Abe border following (OpenCV `findContours`) and `boundingRect`.
