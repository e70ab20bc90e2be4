"""The vault's own checks on its object store: that locked recordings stay locked."""
