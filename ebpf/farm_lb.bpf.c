/* Farm load balancing: every node of the farm receives the VIP's frames and
 * keeps only the clients whose bucket it owns.  Attached at tc ingress. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "farm_lb_maps.h"

_Static_assert((LB_NBUCKETS & (LB_NBUCKETS - 1)) == 0, "LB_NBUCKETS must be a power of two");
_Static_assert(sizeof(struct lb_rule_key) == 8, "lb_rule_key is packed into 8 bytes");

static __always_inline void count(__u32 stat, __u64 bytes)
{
	struct lb_counters *c = bpf_map_lookup_elem(&lb_stats, &stat);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* Murmur3's 32-bit finaliser: cheap and spreads neighbouring addresses and
 * ports over all buckets; the Python model of the filter uses the same mix. */
static __always_inline __u32 mix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline struct lb_rule *find_rule(__be32 vip, __be16 port, __u8 proto)
{
	struct lb_rule_key key = { .vip = vip, .port = port, .proto = proto };
	struct lb_rule *rule = bpf_map_lookup_elem(&lb_rules, &key);

	if (rule)
		return rule;
	key.port = 0;
	return bpf_map_lookup_elem(&lb_rules, &key);
}

SEC("tc")
int farm_lb_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct lb_rule *rule;
	__be16 sport = 0, dport = 0;
	__u32 h, idx;
	__u8 *owned;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		goto other;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl < 5)
		goto other;
	if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) {
		/* Both headers start with the two ports. */
		__be16 *ports = (void *)ip + ip->ihl * 4;

		if ((void *)(ports + 2) > end)
			goto other;
		sport = ports[0];
		dport = ports[1];
	}
	rule = find_rule(ip->daddr, dport, ip->protocol);
	if (!rule)
		goto other;

	switch (rule->filter) {
	case LB_FILTER_ON_PORT:
		h = mix32(bpf_ntohl(ip->saddr) ^ ((__u32)bpf_ntohs(sport) << 16));
		break;
	case LB_FILTER_ON_IPID:
		h = mix32(bpf_ntohl(ip->saddr) ^ bpf_ntohs(ip->id));
		break;
	default:
		h = mix32(bpf_ntohl(ip->saddr));
		break;
	}
	idx = (rule->group % LB_MAX_GROUPS) * LB_NBUCKETS + (h & (LB_NBUCKETS - 1));
	owned = bpf_map_lookup_elem(&lb_owned, &idx);
	if (owned && *owned) {
		count(LB_STAT_ACCEPT, skb->len);
		return TC_ACT_OK;
	}
	count(LB_STAT_DROP, skb->len);
	return TC_ACT_SHOT;
other:
	count(LB_STAT_PASS_OTHER, skb->len);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
