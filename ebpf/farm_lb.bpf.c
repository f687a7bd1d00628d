/* Farm load balancing: every node of the farm sees the frames for the VIPs and
 * keeps only the clients whose bucket it owns (docs/farm.md).  One decision,
 * two attachment points: tc clsact ingress (any driver) and XDP (drivers that
 * support it, before the stack allocates an skb). */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "farm_lb_maps.h"
#include "farm_lb_hash.h"

_Static_assert((LB_NBUCKETS & (LB_NBUCKETS - 1)) == 0, "LB_NBUCKETS must be a power of two");
_Static_assert(sizeof(struct lb_rule_key) == 8, "lb_rule_key is packed into 8 bytes");
_Static_assert(LB_MAX_NODES <= LB_NO_NODE, "a node index must fit a bucket's byte and differ from LB_NO_NODE");

/* include/net/tcp_states.h is kernel-internal. */
#define LB_TCP_LISTEN 10
#define LB_TCP_TIME_WAIT 6

#define LB_IP_MF 0x2000
#define LB_IP_OFFSET 0x1fff

/* Enough of the frame to decide: Ethernet, the longest IPv4 header, TCP. */
#define LB_HDR_MAX (ETH_HLEN + 60 + sizeof(struct tcphdr))

/* linux/if_arp.h drags in the C library's headers, built for another target. */
#define LB_ARPHRD_ETHER 1
#define LB_ARPOP_REQUEST 1
#define LB_ARPOP_REPLY 2

/* An ARP packet for IPv4 over Ethernet. */
struct lb_arp {
	__be16 ar_hrd;
	__be16 ar_pro;
	__u8 ar_hln;
	__u8 ar_pln;
	__be16 ar_op;
	__u8 sha[ETH_ALEN];
	__u8 spa[4];
	__u8 tha[ETH_ALEN];
	__u8 tpa[4];
} __attribute__((packed));

/* What the decision asks of the program type. */
enum lb_action {
	LB_PASS,        /* not this module's: the next filter and the stack as usual */
	LB_ACCEPT,      /* ours: straight to the local stack */
	LB_ACCEPT_HOST, /* ours, eth dst rewritten from the vmac: the stack must see it as to this host */
	LB_DROP,
	LB_TX,          /* rewritten in place: out of the interface it came in */
};

/* A frame being decided: ctx for the socket lookup, bounds for the parsing. */
struct lb_pkt {
	void *ctx;
	void *end;
	__u64 len;
	struct ethhdr *eth;
	const struct lb_config *cfg;
};

static __always_inline void count(__u32 stat, __u64 bytes)
{
	struct lb_counters *c = bpf_map_lookup_elem(&lb_stats, &stat);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline bool same_mac(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) |
		(a[5] ^ b[5])) == 0;
}

/* A node frames can be sent to; NULL for LB_NO_NODE, a stale index or a node down. */
static __always_inline struct lb_node *node_up(__u8 index)
{
	__u32 key = index;
	struct lb_node *node;

	if (index >= LB_MAX_NODES)
		return NULL;
	node = bpf_map_lookup_elem(&lb_nodes, &key);
	return node && node->up ? node : NULL;
}

static __always_inline bool from_farm(const struct ethhdr *eth)
{
	struct lb_mac_key key = {};

	__builtin_memcpy(key.mac, eth->h_source, ETH_ALEN);
	return bpf_map_lookup_elem(&lb_node_macs, &key) != NULL;
}

static __always_inline int arp_request(struct lb_pkt *p)
{
	struct ethhdr *eth = p->eth;
	struct lb_arp *arp = (void *)(eth + 1);
	__be32 spa, tpa;

	if ((void *)(arp + 1) > p->end || arp->ar_hrd != bpf_htons(LB_ARPHRD_ETHER) ||
	    arp->ar_pro != bpf_htons(ETH_P_IP) || arp->ar_hln != ETH_ALEN || arp->ar_pln != 4 ||
	    arp->ar_op != bpf_htons(LB_ARPOP_REQUEST))
		goto pass;
	__builtin_memcpy(&tpa, arp->tpa, 4);
	if (!bpf_map_lookup_elem(&lb_vips, &tpa))
		goto pass;
	__builtin_memcpy(&spa, arp->spa, 4);
	/* Every node holds the VIP: the kernel would answer with its own MAC and
	 * pull the clients to one node.  A gratuitous ARP (spa == tpa) asks
	 * nothing: not answered either. */
	if (!(p->cfg->flags & LB_F_ARP_ANSWER) || spa == tpa) {
		count(LB_STAT_DROP, p->len);
		return LB_DROP;
	}
	/* The vmac is never a source: a switch that learnt it would stop
	 * flooding the VIP's frames to every node. */
	__builtin_memcpy(eth->h_dest, arp->sha, ETH_ALEN);
	__builtin_memcpy(eth->h_source, p->cfg->my_mac, ETH_ALEN);
	arp->ar_op = bpf_htons(LB_ARPOP_REPLY);
	__builtin_memcpy(arp->tha, arp->sha, ETH_ALEN);
	__builtin_memcpy(arp->tpa, arp->spa, 4);
	__builtin_memcpy(arp->sha, p->cfg->answer_mac, ETH_ALEN);
	__builtin_memcpy(arp->spa, &tpa, 4);
	count(LB_STAT_ARP, p->len);
	return LB_TX;
pass:
	count(LB_STAT_PASS_OTHER, p->len);
	return LB_PASS;
}

static __always_inline struct lb_rule *find_rule(__be32 vip, __be16 port, __u8 proto)
{
	struct lb_rule_key key = { .vip = vip, .port = port, .proto = proto };
	struct lb_rule *rule = bpf_map_lookup_elem(&lb_rules, &key);

	if (rule || !port)
		return rule;
	key.port = 0;
	return bpf_map_lookup_elem(&lb_rules, &key);
}

/* What this node's stack holds of a TCP 4-tuple. */
enum lb_sock {
	LB_SK_NONE,  /* nothing, or only a listener */
	LB_SK_FLOW,  /* a connection: handshake in progress or established, closing */
	LB_SK_ENDED, /* a time-wait: a connection this node's side has closed */
};

static __always_inline enum lb_sock local_sock(struct lb_pkt *p, const struct iphdr *ip, __be16 sport,
					       __be16 dport)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	enum lb_sock found;

	t.ipv4.saddr = ip->saddr;
	t.ipv4.daddr = ip->daddr;
	t.ipv4.sport = sport;
	t.ipv4.dport = dport;
	sk = bpf_skc_lookup_tcp(p->ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return LB_SK_NONE;
	found = sk->state == LB_TCP_LISTEN      ? LB_SK_NONE
		: sk->state == LB_TCP_TIME_WAIT ? LB_SK_ENDED
						: LB_SK_FLOW;
	bpf_sk_release(sk);
	return found;
}

/* The verdict (LB_V_*) for a datagram's first (or only) fragment; *node: where
 * to redirect; *stat: the counter of an accept. */
static __always_inline __u8 decide(struct lb_pkt *p, const struct iphdr *ip, __u8 *node, __u32 *stat)
{
	const struct lb_config *cfg = p->cfg;
	void *l4 = (void *)ip + ip->ihl * 4;
	__be16 sport = 0, dport = 0;
	bool tcp_flow = false;
	struct lb_rule *rule;
	struct lb_node *n;
	enum lb_sock sk;
	__u8 owner, prev;
	bool back, alone;

	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		/* A header cut short would not reach a socket anyway. */
		if ((void *)(th + 1) > p->end)
			return LB_V_DROP;
		sport = th->source;
		dport = th->dest;
		/* Anything but a connection request belongs to an existing flow. */
		tcp_flow = !th->syn || th->ack;
	} else if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > p->end)
			return LB_V_DROP;
		sport = uh->source;
		dport = uh->dest;
	}

	owner = cfg->default_owner;
	prev = LB_NO_NODE;
	rule = find_rule(ip->daddr, dport, ip->protocol);
	if (rule) {
		struct lb_bucket *b = NULL;
		__u32 idx;

		if (rule->group < LB_MAX_GROUPS) {
			idx = rule->group * LB_NBUCKETS +
			      (lb_hash(rule->filter, bpf_ntohl(ip->saddr), bpf_ntohs(sport), bpf_ntohs(ip->id)) &
			       (LB_NBUCKETS - 1));
			b = bpf_map_lookup_elem(&lb_buckets, &idx);
		}
		owner = b ? b->owner : LB_NO_NODE;
		prev = b ? b->prev : LB_NO_NODE;
	}

	*stat = LB_STAT_ACCEPT;
	/* A connection of this node's stack outlives a change of its bucket's owner: it
	 * stays here.  A time-wait does not, at first: clients reuse source ports, and the
	 * same 4-tuple may now be a live connection on another node, whose segments this
	 * node's time-wait would answer with an ACK or a reset. */
	sk = tcp_flow ? local_sock(p, ip, sport, dport) : LB_SK_NONE;
	if (sk == LB_SK_FLOW) {
		if (owner != cfg->my_node)
			*stat = LB_STAT_LOCAL_FLOW;
		return LB_V_ACCEPT;
	}

	/* An index out of range (my_node not set yet) owns nothing. */
	if (owner == cfg->my_node && owner < LB_MAX_NODES) {
		if (!tcp_flow)
			return LB_V_ACCEPT;
		/* The bucket moved here but the flow began on the previous owner.
		 * Not back to the node it came from: two nodes that disagree on
		 * the owner would bounce it forever. */
		n = prev != cfg->my_node ? node_up(prev) : NULL;
		back = n && same_mac(n->mac, p->eth->h_source);
		if ((cfg->flags & LB_F_DIRECTED) && n && !back) {
			*node = prev;
			return LB_V_REDIRECT;
		}
		alone = prev == LB_NO_NODE || back;
		/* Nobody else can hold it (there is no previous owner, or it sent this,
		 * holding nothing of it): this node's own time-wait answers it (a server
		 * that closes first waits there for the client's FIN, and a client
		 * reusing the port resets it; dropped, they left the 4-tuple refused for
		 * a minute), or else, when asked, the stack answers with a reset, which
		 * ends the client's wait at once.  (Before the previous owner, the
		 * time-wait would take the segments of a flow the previous owner holds
		 * if the bucket came back here within that minute and a client reused
		 * the port there meanwhile.) */
		if (sk == LB_SK_ENDED && (alone || !n))
			return LB_V_ACCEPT;
		if ((cfg->flags & LB_F_TCPRESET) && alone)
			return LB_V_ACCEPT;
		return LB_V_DROP;
	}

	/* A frame a farm node already steered is never forwarded again. */
	if (!from_farm(p->eth)) {
		if ((cfg->flags & LB_F_DIRECTED) && node_up(owner)) {
			*node = owner;
			return LB_V_REDIRECT;
		}
		return LB_V_DROP;
	}
	/* Steered here by the owner, which holds nothing of it, to this node as the
	 * bucket's previous owner: this node's time-wait is all that is left of it. */
	if (sk == LB_SK_ENDED) {
		*stat = LB_STAT_LOCAL_FLOW;
		return LB_V_ACCEPT;
	}
	return LB_V_DROP;
}

static __always_inline int apply(struct lb_pkt *p, __u8 verdict, __u8 node, __u32 stat)
{
	struct ethhdr *eth = p->eth;
	struct lb_node *n;

	if (verdict == LB_V_ACCEPT) {
		count(stat, p->len);
		if ((p->cfg->flags & LB_F_FLOOD) && same_mac(eth->h_dest, p->cfg->vmac)) {
			__builtin_memcpy(eth->h_dest, p->cfg->my_mac, ETH_ALEN);
			return LB_ACCEPT_HOST;
		}
		return LB_ACCEPT;
	}
	/* Looked up again: a remembered fragment verdict may outlive the node. */
	n = verdict == LB_V_REDIRECT ? node_up(node) : NULL;
	if (n) {
		__builtin_memcpy(eth->h_dest, n->mac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, p->cfg->my_mac, ETH_ALEN);
		count(LB_STAT_REDIRECT, p->len);
		return LB_TX;
	}
	count(LB_STAT_DROP, p->len);
	return LB_DROP;
}

static __always_inline int ipv4(struct lb_pkt *p)
{
	struct iphdr *ip = (void *)(p->eth + 1);
	struct lb_frag_key fkey = {};
	struct lb_frag frag = {};
	struct lb_frag *seen;
	__u32 stat = LB_STAT_ACCEPT;
	__u16 off;

	if ((void *)(ip + 1) > p->end || ip->ihl < 5 || !bpf_map_lookup_elem(&lb_vips, &ip->daddr)) {
		count(LB_STAT_PASS_OTHER, p->len);
		return LB_PASS;
	}
	fkey.saddr = ip->saddr;
	fkey.daddr = ip->daddr;
	fkey.id = ip->id;
	fkey.proto = ip->protocol;
	off = bpf_ntohs(ip->frag_off);
	/* Later fragments carry no ports: they follow the first one.  Unknown
	 * (first one lost or late): accepted, the stack's reassembly discards
	 * what never completes. */
	if (off & LB_IP_OFFSET) {
		seen = bpf_map_lookup_elem(&lb_frags, &fkey);
		if (!seen)
			return apply(p, LB_V_ACCEPT, 0, stat);
		return apply(p, seen->verdict, seen->node, stat);
	}
	frag.verdict = decide(p, ip, &frag.node, &stat);
	if (off & LB_IP_MF)
		bpf_map_update_elem(&lb_frags, &fkey, &frag, BPF_ANY);
	return apply(p, frag.verdict, frag.node, stat);
}

static __always_inline int lb_frame(void *ctx, void *data, void *end, __u64 len)
{
	struct lb_pkt p = { .ctx = ctx, .end = end, .len = len, .eth = data };
	__u32 zero = 0;

	p.cfg = bpf_map_lookup_elem(&lb_config, &zero);
	if ((void *)(p.eth + 1) <= end && p.cfg) {
		if (p.eth->h_proto == bpf_htons(ETH_P_ARP))
			return arp_request(&p);
		if (p.eth->h_proto == bpf_htons(ETH_P_IP))
			return ipv4(&p);
	}
	count(LB_STAT_PASS_OTHER, len);
	return LB_PASS;
}

SEC("tc")
int farm_lb_tc(struct __sk_buff *skb)
{
	__u32 want = skb->len < LB_HDR_MAX ? skb->len : LB_HDR_MAX;

	/* Headers left in paged data by the driver would read as a truncated
	 * frame: pull them into the linear part first. */
	if ((void *)(long)skb->data + want > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, want);

	switch (lb_frame(skb, (void *)(long)skb->data, (void *)(long)skb->data_end, skb->len)) {
	case LB_ACCEPT_HOST:
		/* eth_type_trans() classed the frame to the vmac as another
		 * host's, which the IP stack discards. */
		bpf_skb_change_type(skb, PACKET_HOST);
		return TC_ACT_OK;
	case LB_ACCEPT:
		return TC_ACT_OK;
	case LB_DROP:
		return TC_ACT_SHOT;
	case LB_TX:
		return bpf_redirect(skb->ifindex, 0);
	default:
		/* Not TC_ACT_OK: the filters of other modules on this interface still run. */
		return TC_ACT_UNSPEC;
	}
}

SEC("xdp")
int farm_lb_xdp(struct xdp_md *ctx)
{
	/* Before the stack: rewriting the vmac is enough for it to see the frame as to this host. */
	switch (lb_frame(ctx, (void *)(long)ctx->data, (void *)(long)ctx->data_end, bpf_xdp_get_buff_len(ctx))) {
	case LB_DROP:
		return XDP_DROP;
	case LB_TX:
		return XDP_TX;
	default:
		return XDP_PASS;
	}
}

char LICENSE[] SEC("license") = "GPL";
