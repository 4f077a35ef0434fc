"""The inference agent: subscribes to frames, runs the pipeline, publishes results."""
