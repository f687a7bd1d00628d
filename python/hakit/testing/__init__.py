"""The simulated cluster (sim: nodes in network and mount namespaces), the demo, and
scenarios shared by the tests and the benchmarks (zeroloss, rfsctl)."""
