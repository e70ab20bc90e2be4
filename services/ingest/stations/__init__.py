"""Docking stations authenticate with an Ed25519-signed assertion and get a short-lived
bearer token for their uploads."""
