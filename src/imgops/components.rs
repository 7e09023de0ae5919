//! Connected components with statistics, as OpenCV `connectedComponentsWithStats`.
