"""Témoin's operator side: the `temoin` command and the embedded development stack."""
