"""The registry of recordings: each sealed clip's metadata (R241-10), where its sealed object
is, its wrapped data key, and how long it is kept (R241-13)."""
