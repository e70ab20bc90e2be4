"""The dashboard: a backend-for-frontend that signs people in with OpenID Connect and shows
the vault's and reporting's answers as server-rendered French pages. It holds no data of its
own, but for the people's sessions (in PostgreSQL, so that any replica serves anyone), and
decides nothing about access: every page is what the APIs answer for the person's token,
which stays on the server."""
