"""Clips from docking stations: authenticated, checked, streamed to the vault (which hashes and
seals them), and acknowledged with a signed receipt only once sealed and registered."""
