/* Maps of the farm load-balancing program, declared once here. */
#ifndef HAKIT_FARM_LB_MAPS_H
#define HAKIT_FARM_LB_MAPS_H

#include <bpf/bpf_helpers.h>
#include "farm_lb_consts.h"
#include "farm_lb_structs.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_RULES);
	__type(key, struct lb_rule_key);
	__type(value, struct lb_rule);
} lb_rules SEC(".maps");

/* owned[group * LB_NBUCKETS + bucket] != 0 when this node serves the bucket. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_GROUPS * LB_NBUCKETS);
	__type(key, __u32);
	__type(value, __u8);
} lb_owned SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_STAT_MAX);
	__type(key, __u32);
	__type(value, struct lb_counters);
} lb_stats SEC(".maps");

#endif
