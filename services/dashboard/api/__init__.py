"""Calls to the vault and reporting APIs with the person's own access token, and the
translation of their problem+json answers into French for the pages."""
