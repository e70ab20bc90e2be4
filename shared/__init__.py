"""Témoin's common package: db base, errors, storage client, web plumbing (later: crypto,
auth, audit writer). It reads no settings: the services pass values in."""
