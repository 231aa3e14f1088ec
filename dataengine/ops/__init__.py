"""Array operations on label maps and optical flow, shared by backends and stages (numpy / OpenCV only)."""
