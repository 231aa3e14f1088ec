"""Model backends: segmenters, trackers, and checkpoint/device helpers."""
