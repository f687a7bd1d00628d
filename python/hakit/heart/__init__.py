"""Heartbeats: link.Heart sends and hears them in its own thread, protocol the datagram,
incarnation the counter that orders a node's module processes."""
