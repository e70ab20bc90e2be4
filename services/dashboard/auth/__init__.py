"""Signing in with OpenID Connect (authorization code + PKCE, through Authlib), the session
that keeps the person and their tokens server-side, CSRF, signing out."""
