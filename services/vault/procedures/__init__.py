"""Procedures (judiciaires, administratives, disciplinaires, formation): the recordings they
hold under legal hold, and the extraction packages made for them (R241-12, R241-13)."""
