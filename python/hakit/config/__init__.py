"""cluster.xml and userconfig.xml: their models (cluster_model, module_model, checked
with FILE:LINE), loading (loader), failover rules (rules), .safe archives (safe_archive)
and the reference generator (docgen, for docs/configuration.md only)."""
