/* Maps of the farm load-balancing program, declared once here.  The loader
 * pins each under its name in the module's directory of a bpffs. */
#ifndef HAKIT_FARM_LB_MAPS_H
#define HAKIT_FARM_LB_MAPS_H

#include <bpf/bpf_helpers.h>
#include "farm_lb_consts.h"
#include "farm_lb_structs.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_config);
} lb_config SEC(".maps");

/* The module's VIPs (network order) -> index in <virtual_addr> order. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_VIPS);
	__type(key, __be32);
	__type(value, __u32);
} lb_vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_RULES);
	__type(key, struct lb_rule_key);
	__type(value, struct lb_rule);
} lb_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_GROUPS * LB_NBUCKETS);
	__type(key, __u32);
	__type(value, struct lb_bucket);
} lb_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_NODES);
	__type(key, __u32);
	__type(value, struct lb_node);
} lb_nodes SEC(".maps");

/* The farm's MACs: a frame from one of them was already steered by a node. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_NODES);
	__type(key, struct lb_mac_key);
	__type(value, __u32);
} lb_node_macs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_MAX_FRAGS);
	__type(key, struct lb_frag_key);
	__type(value, struct lb_frag);
} lb_frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_STAT_MAX);
	__type(key, __u32);
	__type(value, struct lb_counters);
} lb_stats SEC(".maps");

#endif
