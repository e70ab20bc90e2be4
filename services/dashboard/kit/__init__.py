"""What every page of the dashboard shares: the server-side session, the security headers,
the templates and their filters. Nothing here reads settings: app.py wires them."""
