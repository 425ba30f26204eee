"""rest-loop: ReST-style synthetic-data self-improvement loops for small language models."""
