/* Constants shared by the farm load-balancing program and its Python loader. */
#ifndef HAKIT_FARM_LB_CONSTS_H
#define HAKIT_FARM_LB_CONSTS_H

/* Buckets per load-balancing group: a power of two so the modulo is a mask.
 * 256 keeps one node's share movable in steps of 0.4 % while the owned-bucket
 * map stays one page per group. */
#define LB_NBUCKETS 256
#define LB_MAX_GROUPS 64
#define LB_MAX_RULES 1024

/* <rule filter="..."> values, as stored in struct lb_rule.filter. */
#define LB_FILTER_ON_ADDR 1
#define LB_FILTER_ON_PORT 2
#define LB_FILTER_ON_IPID 3

/* Indexes of struct lb_counters in the per-CPU stats array. */
#define LB_STAT_PASS_OTHER 0 /* not for a VIP: left to the stack */
#define LB_STAT_ACCEPT 1     /* bucket owned here */
#define LB_STAT_DROP 2       /* bucket owned by another node */
#define LB_STAT_NO_RULE 3    /* VIP traffic on a port without a rule */
#define LB_STAT_MAX 4

#endif
