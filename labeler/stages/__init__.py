"""The stages of the pipeline: each renders templates, makes batched engine calls, parses, writes shards."""
