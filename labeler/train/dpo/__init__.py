"""Direct preference optimisation on labeler's preference shards, with each pair's soft label as its target."""
