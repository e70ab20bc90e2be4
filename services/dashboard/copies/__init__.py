"""Copies anonymisées pour la formation (R241-12, issue 18): the demande, the copy's state, its
viewing and review, on top of the vault's derivatives API."""
