/* Map keys and values of the farm load-balancing program.  The Python loader
 * reads these layouts from the object's BTF, so this file is their only
 * definition. */
#ifndef HAKIT_FARM_LB_STRUCTS_H
#define HAKIT_FARM_LB_STRUCTS_H

#include <linux/types.h>

/* One <rule port proto> of a VIP; port 0 matches every port. */
struct lb_rule_key {
	__be32 vip;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct lb_rule {
	__u32 group; /* index into the owned-bucket map, times LB_NBUCKETS */
	__u32 filter; /* LB_FILTER_* */
};

struct lb_counters {
	__u64 packets;
	__u64 bytes;
};

#endif
