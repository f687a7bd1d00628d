/* Map keys and values of the farm load-balancing program.  The Cython loader
 * (native/bpf/_farm_lb.pyx) includes this file: it is their only definition. */
#ifndef HAKIT_FARM_LB_STRUCTS_H
#define HAKIT_FARM_LB_STRUCTS_H

#include <linux/types.h>

/* This node's view, written by the module process (one entry). */
struct lb_config {
	__u8 my_mac[6];     /* the farm interface's own MAC: source of every frame sent */
	__u8 vmac[6];       /* vmac_invisible: the MAC the VIPs resolve to, never a source */
	__u8 answer_mac[6]; /* MAC given in ARP replies for the VIPs (LB_F_ARP_ANSWER) */
	__u8 my_node;       /* this node's index */
	__u8 default_owner; /* node serving VIP ports without a rule; LB_NO_NODE: none */
	__u32 flags;        /* LB_F_* */
};

/* One <rule port proto> of a VIP; port 0 matches every port. */
struct lb_rule_key {
	__be32 vip;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct lb_rule {
	__u32 group; /* index of the group's buckets: group * LB_NBUCKETS */
	__u32 filter; /* LB_FILTER_* */
};

/* buckets[group * LB_NBUCKETS + hash % LB_NBUCKETS] */
struct lb_bucket {
	__u8 owner; /* node taking new flows; LB_NO_NODE: nobody yet (moving) */
	__u8 prev;  /* previous owner still alive: may hold established flows */
	__u16 pad;
};

struct lb_node {
	__u8 mac[6];
	__u8 up;
	__u8 pad;
};

struct lb_mac_key {
	__u8 mac[6];
	__u16 pad;
};

struct lb_frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 pad;
};

struct lb_frag {
	__u8 verdict; /* LB_V_* */
	__u8 node;    /* LB_V_REDIRECT: to this node */
	__u16 pad;
};

struct lb_counters {
	__u64 packets;
	__u64 bytes;
};

#endif
