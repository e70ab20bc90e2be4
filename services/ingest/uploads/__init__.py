"""Clips from docking stations: hashed while they stream, checked, handed to the vault for
sealing, and acknowledged with a signed receipt only once sealed and registered."""
