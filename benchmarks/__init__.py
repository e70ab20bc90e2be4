"""Benchmarks: each prints its figure beside a peer measured in the same run (`make bench-*`)."""
