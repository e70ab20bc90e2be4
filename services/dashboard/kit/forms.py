"""Checks a form makes before calling an API, so that a person sees them beside the field
without a round trip; the API checks the same again and decides."""

# The APIs' minimum for a motif, a reason or a qualification (min_length in their schemas).
MIN_TEXT = 3


def too_short(text: str) -> bool:
    """A motif, reason or qualification the API would refuse as too short."""
    return len(text.strip()) < MIN_TEXT
