"""The `hakit` command (main.main) and `safekit`/`exitcode` for SafeKit's scripts
(safekit); one cmd_*.py per group of verbs."""
