"""The home page: what the person may do, their organisation, and its creation by the maire."""
