"""SQLite stores: module_store (a module's log, resources, states), node_store (the
commands log), retention (what they keep), syslog (the module log copied to syslog)."""
