"""Incremental statistics from the audit feed, and the reports computed from them."""
