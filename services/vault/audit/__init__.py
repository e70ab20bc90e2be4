"""The audit trail as a verifiable log (R241-14, RFC 9162): sequencing, signed tree heads,
inclusion and consistency proofs, the full verifier, queries, and the feed for reporting."""
