"""The web service of hakitd: the console and the HTTP API (docs/web.md)."""
