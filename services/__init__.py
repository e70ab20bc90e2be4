"""The three Témoin services: ingest, vault and reporting."""
