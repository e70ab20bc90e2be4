"""Receives clips from docking stations, checks the metadata the law requires (R241-10), streams
them to the vault, which hashes and seals them, and signs the receipts."""
