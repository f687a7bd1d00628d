/* Constants shared by the farm load-balancing program and its loader
 * (native/bpf/_farm_lb.pyx includes this file). */
#ifndef HAKIT_FARM_LB_CONSTS_H
#define HAKIT_FARM_LB_CONSTS_H

/* Buckets per load-balancing group: a power of two so the modulo is a mask.
 * 4096 lets the ownership computation give every node its exact share of the
 * power while a node leaving moves at most 1 % more than its own share
 * (docs/farm.md), and a 3,000-connection spread is not quantised by buckets. */
#define LB_NBUCKETS 4096
#define LB_MAX_GROUPS 64
#define LB_MAX_RULES 16384
#define LB_MAX_VIPS 64
/* Node indexes are the module's nodes in name order; one byte each in a bucket. */
#define LB_MAX_NODES 64
#define LB_NO_NODE 255
/* Fragmented datagrams in flight whose first fragment's decision is remembered. */
#define LB_MAX_FRAGS 8192

/* <rule filter="..."> values, as stored in struct lb_rule.filter. */
#define LB_FILTER_ON_ADDR 1
#define LB_FILTER_ON_PORT 2
#define LB_FILTER_ON_IPID 3

/* struct lb_config.flags */
#define LB_F_FLOOD (1u << 0)      /* vmac_invisible: frames to the virtual MAC reach every node */
#define LB_F_DIRECTED (1u << 1)   /* vmac_directed: forward others' frames to their owner */
#define LB_F_ARP_ANSWER (1u << 2) /* answer ARP requests for the VIPs with answer_mac */
#define LB_F_TCPRESET (1u << 3)   /* let the stack reset unknown flows of settled buckets */

/* Decisions remembered for the later fragments of a datagram (struct lb_frag.verdict). */
#define LB_V_ACCEPT 1
#define LB_V_DROP 2
#define LB_V_REDIRECT 3

/* Indexes of struct lb_counters in the per-CPU stats array. */
#define LB_STAT_PASS_OTHER 0 /* not for a VIP of this module: left to the next filter */
#define LB_STAT_ACCEPT 1     /* bucket owned here (or the elected node's unruled port) */
#define LB_STAT_DROP 2       /* bucket owned by another node, or no owner */
#define LB_STAT_LOCAL_FLOW 3 /* bucket owned elsewhere but the flow's socket is here */
#define LB_STAT_REDIRECT 4   /* forwarded to the bucket's owner (vmac_directed) */
#define LB_STAT_ARP 5        /* ARP requests for a VIP answered */
#define LB_STAT_MAX 6

#endif
