"""Video panoptic metrics (STQ, VPQ, VEQ, trajectory recall, fragmentation), shared by trajdata and trajtok."""
