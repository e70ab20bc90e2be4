"""Recordings: search, a recording's page (R241-10 metadata, procedures, history), and viewing
with a motif (R241-14; for a wearer, the purposes of loi 2021-646 art. 45)."""
