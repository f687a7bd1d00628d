"""What runs a node: hakitd (daemon), its RPC server (rpc), the cluster's credentials
(pki, trust), configuration applied from other nodes (remote_ops, cluster_conf), boot
settings (boot) and systemd's notification (notify)."""
