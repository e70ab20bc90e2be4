"""Stores recordings sealed under object lock and serves them only through role-checked,
logged endpoints (R241-12, R241-14)."""
