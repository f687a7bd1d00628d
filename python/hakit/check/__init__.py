"""The checkers of a module process: registry.Checks builds them from the configuration
(tcp, ping, intf, ip, custom, module, errd, the split-brain witness) and each sets its
resource; the failover rules read the resources."""
