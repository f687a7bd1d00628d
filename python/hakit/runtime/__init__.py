"""What every part of a module process uses, below them all: the module log (log),
resources (resources), which node this is (identity), ending a process group
(procgroup), where the node's credentials live (credentials), calling another node's
hakitd (rpc_client) and netlink event sockets read from the event loop (netlink)."""
