"""Fuzz targets and their runner (docs/security.md, "Fuzzing").

fuzz_config.py and fuzz_wire.py are atheris targets, rfs_receiver a libFuzzer one
(native/rfs/fuzz/); run.py runs any of them for a bounded time.  Not test modules:
tests/test_fuzz.py runs each briefly inside `make test`, `make fuzz` runs them long.
"""
