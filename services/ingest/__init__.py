"""Receives clips from docking stations, hashes them while streaming, checks the metadata the
law requires (R241-10) and hands them to the vault."""
