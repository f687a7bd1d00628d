"""Virtual IPs: the mirror's (alias, gratuitous ARP in garp) and the farm's (farm: the
ownership protocol and the eBPF filter; buckets the bucket table; watch the filter's
supervision)."""
