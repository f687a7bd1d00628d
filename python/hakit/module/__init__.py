"""A module process (process, `python -m hakit.module.process AM`): the builders of its
parts (assembly), the automaton that owns its states, the failover machine, its
scripts, its data state on disk; catalog is what is installed on the node."""
