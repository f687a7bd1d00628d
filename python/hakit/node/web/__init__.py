"""The web service and console of hakitd (issue 18; docs/web.md)."""
