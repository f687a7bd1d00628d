"""A module process (process, `python -m hakit.module.process AM`): the builders of its
parts (assembly), the automaton that owns its states (automaton the core, states the
states, one driver per mode: mirror_driver, farm_driver, light_driver behind driver's
interface), what it tells its peers in the heartbeats (news), the failover machine, its
scripts, its data state on disk; catalog is what is installed on the node."""
