"""The mirror's replication seen from the module process: daemon drives one hakit-rfs,
mirror.Replication the set of them as the automaton moves, progress their figures."""
