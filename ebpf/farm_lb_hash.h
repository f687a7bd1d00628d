/* The client hash of the farm filter.  Plain C included by both the eBPF
 * program and the Cython loader (native/bpf/_farm_lb.pyx), so user space
 * computes a client's bucket with the very code the kernel runs. */
#ifndef HAKIT_FARM_LB_HASH_H
#define HAKIT_FARM_LB_HASH_H

#include <linux/types.h>
#include "farm_lb_consts.h"

/* Murmur3's 32-bit finaliser: cheap, and spreads neighbouring addresses and
 * ports over all buckets. */
static inline __attribute__((always_inline)) __u32 lb_fmix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

/* Every argument in host order.  Unknown filters hash like on_addr: a client
 * then stays on one node whatever it sends. */
static inline __attribute__((always_inline)) __u32 lb_hash(__u32 filter, __u32 saddr, __u16 sport, __u16 ipid)
{
	switch (filter) {
	case LB_FILTER_ON_PORT:
		return lb_fmix32(saddr ^ ((__u32)sport << 16));
	case LB_FILTER_ON_IPID:
		return lb_fmix32(saddr ^ ipid);
	default:
		return lb_fmix32(saddr);
	}
}

#endif
