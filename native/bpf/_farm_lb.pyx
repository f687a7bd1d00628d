"""Loader and maps of the farm's eBPF program (ebpf/farm_lb.bpf.c), over libbpf.

The map layouts, constants and the client hash come from the program's own
headers (ebpf/farm_lb_*.h): user space never restates them.  Every failure is an
OSError(errno, "what failed: reason"); libbpf's messages are kept quiet and only
shown, tail first, in the error of the call that failed.
"""

import os
import socket

from libc.errno cimport EEXIST, EINVAL, ENODEV, ENOENT, EOPNOTSUPP, errno
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset


cdef extern from "linux/types.h":
    ctypedef unsigned char __u8
    ctypedef unsigned short __u16
    ctypedef unsigned int __u32
    ctypedef unsigned long long __u64
    ctypedef unsigned short __be16
    ctypedef unsigned int __be32

cdef extern from "farm_lb_consts.h":
    enum:
        LB_NBUCKETS
        LB_MAX_GROUPS
        LB_MAX_NODES
        LB_MAX_RULES
        LB_MAX_VIPS
        LB_NO_NODE
        LB_FILTER_ON_ADDR
        LB_FILTER_ON_PORT
        LB_FILTER_ON_IPID
        LB_F_FLOOD
        LB_F_DIRECTED
        LB_F_ARP_ANSWER
        LB_F_TCPRESET
        LB_STAT_PASS_OTHER
        LB_STAT_ACCEPT
        LB_STAT_DROP
        LB_STAT_LOCAL_FLOW
        LB_STAT_REDIRECT
        LB_STAT_ARP
        LB_STAT_MAX

# Only the fields used here are named; sizes and offsets are the C compiler's.
cdef extern from "farm_lb_structs.h":
    struct lb_config:
        __u8 my_mac[6]
        __u8 vmac[6]
        __u8 answer_mac[6]
        __u8 my_node
        __u8 default_owner
        __u32 flags
    struct lb_rule_key:
        __be32 vip
        __be16 port
        __u8 proto
    struct lb_rule:
        __u32 group
        __u32 filter
    struct lb_bucket:
        __u8 owner
        __u8 prev
    struct lb_node:
        __u8 mac[6]
        __u8 up
    struct lb_mac_key:
        __u8 mac[6]
    struct lb_counters:
        __u64 packets
        __u64 bytes

cdef extern from "farm_lb_hash.h":
    __u32 lb_hash(__u32 filter, __u32 saddr, __u16 sport, __u16 ipid)

cdef extern from "linux/bpf.h":
    struct bpf_prog_info:
        __u32 id

cdef extern from "linux/if_link.h":
    enum:
        XDP_FLAGS_SKB_MODE
        XDP_FLAGS_DRV_MODE
        XDP_FLAGS_REPLACE

cdef extern from "linux/pkt_sched.h":
    enum:
        TC_H_CLSACT
        TC_H_MIN_INGRESS
        TC_H_MIN_EGRESS

cdef extern from "linux/magic.h":
    enum:
        BPF_FS_MAGIC

cdef extern from "sys/vfs.h":
    ctypedef struct statfs_t "struct statfs":
        long f_type
    int c_statfs "statfs"(const char *path, statfs_t *buf)

cdef extern from "sys/mount.h":
    int mount(const char *source, const char *target, const char *fstype, unsigned long flags,
              const void *data)

cdef extern from "bpf/bpf.h":
    struct bpf_map_batch_opts:
        size_t sz
    struct bpf_test_run_opts:
        size_t sz
        const void *data_in
        void *data_out
        __u32 data_size_in
        __u32 data_size_out
        __u32 retval
        int repeat
    int bpf_obj_get(const char *pathname)
    int bpf_obj_get_info_by_fd(int fd, void *info, __u32 *info_len)
    int bpf_map_lookup_elem(int fd, const void *key, void *value)
    int bpf_map_update_elem(int fd, const void *key, const void *value, __u64 flags)
    int bpf_map_delete_elem(int fd, const void *key)
    int bpf_map_get_next_key(int fd, const void *key, void *next_key)
    int bpf_map_update_batch(int fd, const void *keys, const void *values, __u32 *count,
                             const bpf_map_batch_opts *opts)
    int bpf_prog_test_run_opts(int prog_fd, bpf_test_run_opts *opts)

cdef extern from "bpf/libbpf.h":
    struct bpf_object:
        pass
    struct bpf_map:
        pass
    struct bpf_program:
        pass
    enum bpf_tc_attach_point:
        BPF_TC_INGRESS
        BPF_TC_EGRESS
    enum:
        BPF_TC_F_REPLACE
    struct bpf_tc_hook:
        size_t sz
        int ifindex
        bpf_tc_attach_point attach_point
    struct bpf_tc_opts:
        size_t sz
        int prog_fd
        __u32 flags
        __u32 prog_id
        __u32 handle
        __u32 priority
    struct bpf_xdp_attach_opts:
        size_t sz
        int old_prog_fd
    struct bpf_xdp_query_opts:
        size_t sz
        __u32 drv_prog_id
        __u32 hw_prog_id
        __u32 skb_prog_id
    bpf_object *bpf_object__open_file(const char *path, const void *opts)
    int bpf_object__load(bpf_object *obj) nogil
    void bpf_object__close(bpf_object *obj)
    bpf_map *bpf_object__next_map(const bpf_object *obj, const bpf_map *map)
    bpf_program *bpf_object__find_program_by_name(const bpf_object *obj, const char *name)
    const char *bpf_map__name(const bpf_map *map)
    bint bpf_map__is_internal(const bpf_map *map)
    int bpf_map__pin(bpf_map *map, const char *path)
    int bpf_program__pin(bpf_program *prog, const char *path)
    int bpf_tc_hook_create(bpf_tc_hook *hook)
    int bpf_tc_hook_destroy(bpf_tc_hook *hook)
    int bpf_tc_attach(const bpf_tc_hook *hook, bpf_tc_opts *opts)
    int bpf_tc_detach(const bpf_tc_hook *hook, const bpf_tc_opts *opts)
    int bpf_tc_query(const bpf_tc_hook *hook, bpf_tc_opts *opts)
    int bpf_xdp_attach(int ifindex, int prog_fd, __u32 flags, const bpf_xdp_attach_opts *opts)
    int bpf_xdp_query(int ifindex, int flags, bpf_xdp_query_opts *opts)
    int libbpf_num_possible_cpus()

# libbpf prints to stderr by default; a daemon's stderr is no place for it.  The
# last messages are kept for the error of the call that failed (a verifier
# rejection ends with its reason).  Calls hold the GIL: no locking needed.
cdef extern from *:
    """
    #include <stdarg.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <bpf/libbpf.h>

    #define HK_LOG_MAX 8192
    static char hk_log[HK_LOG_MAX + 1];
    static size_t hk_log_len;

    static void hk_log_append(const char *s, size_t n)
    {
        if (n >= HK_LOG_MAX) {
            memcpy(hk_log, s + n - HK_LOG_MAX, HK_LOG_MAX);
            hk_log_len = HK_LOG_MAX;
        } else {
            if (hk_log_len + n > HK_LOG_MAX) {
                size_t drop = hk_log_len + n - HK_LOG_MAX;

                memmove(hk_log, hk_log + drop, hk_log_len - drop);
                hk_log_len -= drop;
            }
            memcpy(hk_log + hk_log_len, s, n);
            hk_log_len += n;
        }
        hk_log[hk_log_len] = 0;
    }

    static int hk_log_print(enum libbpf_print_level level, const char *fmt, va_list ap)
    {
        va_list aq;
        char *msg;
        int n;

        if (level == LIBBPF_DEBUG)
            return 0;
        va_copy(aq, ap);
        n = vsnprintf(NULL, 0, fmt, aq);
        va_end(aq);
        /* The verifier's log comes as one message of any size. */
        if (n <= 0 || !(msg = malloc((size_t)n + 1)))
            return 0;
        vsnprintf(msg, (size_t)n + 1, fmt, ap);
        hk_log_append(msg, (size_t)n);
        free(msg);
        return n;
    }

    static void hk_log_capture(void) { libbpf_set_print(hk_log_print); }
    static void hk_log_reset(void) { hk_log_len = 0; hk_log[0] = 0; }
    """
    char hk_log[]
    void hk_log_capture()
    void hk_log_reset()

hk_log_capture()

NBUCKETS = LB_NBUCKETS
MAX_GROUPS = LB_MAX_GROUPS
MAX_NODES = LB_MAX_NODES
MAX_RULES = LB_MAX_RULES
MAX_VIPS = LB_MAX_VIPS
NO_NODE = LB_NO_NODE
FILTER_ON_ADDR = LB_FILTER_ON_ADDR
FILTER_ON_PORT = LB_FILTER_ON_PORT
FILTER_ON_IPID = LB_FILTER_ON_IPID
F_FLOOD = LB_F_FLOOD
F_DIRECTED = LB_F_DIRECTED
F_ARP_ANSWER = LB_F_ARP_ANSWER
F_TCPRESET = LB_F_TCPRESET


def _stat_names():
    names = [""] * LB_STAT_MAX
    names[LB_STAT_PASS_OTHER] = "other"
    names[LB_STAT_ACCEPT] = "accepted"
    names[LB_STAT_DROP] = "dropped"
    names[LB_STAT_LOCAL_FLOW] = "local_flow"
    names[LB_STAT_REDIRECT] = "redirected"
    names[LB_STAT_ARP] = "arp"
    assert all(names), "a LB_STAT_* counter has no name"
    return tuple(names)


STATS = _stat_names()

# The maps of farm_lb_maps.h, pinned under these names by load().
_MAPS = ("lb_config", "lb_vips", "lb_rules", "lb_buckets", "lb_nodes", "lb_node_macs", "lb_frags", "lb_stats")
# Program name in the object -> pin name.
_PROGS = {"farm_lb_tc": "prog_tc", "farm_lb_xdp": "prog_xdp"}
_PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
_HOOKS = ("tc", "xdp", "xdpgeneric")


cdef str _log_tail(int lines=20):
    text = (<bytes>hk_log).decode(errors="replace").strip()
    return "\n".join(text.splitlines()[-lines:])


cdef int _raise(int err, str what, bint with_log=False) except -1:
    """Raise OSError(err, "what: strerror"), libbpf's last messages below when asked."""
    msg = f"{what}: {os.strerror(err)}"
    if with_log:
        tail = _log_tail()
        if tail:
            msg += "\n" + tail
    raise OSError(err, msg)


cdef inline int _check(int ret, str what) except -1:
    # libbpf 1.x returns -errno.
    if ret < 0:
        _raise(-ret, what, True)
    return ret


cdef int _check_mac(bytes mac, str what) except -1:
    if len(mac) != 6:
        raise ValueError(f"{what}: a MAC address is 6 bytes, got {mac!r}")
    return 0


cdef bytes _be32(str addr):
    try:
        return socket.inet_aton(addr)
    except OSError:
        raise ValueError(f"not an IPv4 address: {addr!r}") from None


def ensure_bpffs(path: str) -> None:
    """Make path a bpffs mount point (the pins outlive the module process)."""
    cdef statfs_t st
    os.makedirs(path, mode=0o700, exist_ok=True)
    p = os.fsencode(path)
    if c_statfs(p, &st) != 0:
        _raise(errno, f"statfs {path}")
    if <unsigned long>st.f_type == BPF_FS_MAGIC:
        return
    if mount(b"bpf", p, b"bpf", 0, b"mode=0700") != 0:
        _raise(errno, f"mounting a bpf filesystem on {path}")


def load(obj_path: str, pin_dir: str) -> None:
    """Load the object into the kernel and pin its maps and programs under pin_dir."""
    cdef bpf_object *obj
    cdef bpf_map *m = NULL
    cdef bpf_program *prog
    if os.path.isdir(pin_dir) and os.listdir(pin_dir):
        _raise(EEXIST, f"loading the farm filter in {pin_dir}")
    hk_log_reset()
    obj = bpf_object__open_file(os.fsencode(obj_path), NULL)
    if obj == NULL:
        _raise(errno, f"opening {obj_path}", True)
    cdef int ret
    try:
        # The verifier may take a while, longer on a busy machine: the module process's
        # other threads (its heartbeats) run meanwhile.  (The log callback is plain C.)
        with nogil:
            ret = bpf_object__load(obj)
        _check(ret, f"loading {obj_path}")
        os.makedirs(pin_dir, mode=0o700, exist_ok=True)
        while True:
            m = bpf_object__next_map(obj, m)
            if m == NULL:
                break
            if bpf_map__is_internal(m):
                continue
            name = bpf_map__name(m).decode()
            path = os.path.join(pin_dir, name)
            _check(bpf_map__pin(m, os.fsencode(path)), f"pinning map {name} at {path}")
        for name, pin in _PROGS.items():
            prog = bpf_object__find_program_by_name(obj, name.encode())
            if prog == NULL:
                _raise(ENOENT, f"program {name} in {obj_path}")
            path = os.path.join(pin_dir, pin)
            _check(bpf_program__pin(prog, os.fsencode(path)), f"pinning program {name} at {path}")
    except BaseException:
        unpin(pin_dir)
        raise
    finally:
        # The pins hold the maps and programs from now on.
        bpf_object__close(obj)


def unpin(pin_dir: str) -> None:
    """Remove the pins (the kernel frees what nothing else holds) and the directory."""
    try:
        names = os.listdir(pin_dir)
    except FileNotFoundError:
        return
    for name in names:
        os.unlink(os.path.join(pin_dir, name))
    os.rmdir(pin_dir)


def bucket_of(__u32 filter, str saddr, __u16 sport, __u16 ipid) -> int:
    """The bucket of a client in a group with this filter, as the program computes it."""
    cdef __u32 addr = int.from_bytes(_be32(saddr), "big")
    return lb_hash(filter, addr, sport, ipid) & (LB_NBUCKETS - 1)


cdef bytes _raw(const void *p, size_t n):
    return (<const char *>p)[:n]


cdef int _sync_hash(int fd, dict entries, size_t key_size, str what) except -1:
    """Make the hash map hold exactly entries (key bytes -> value bytes): new
    entries first, then the stale ones removed, so the program never sees a gap."""
    cdef char *key = <char *>malloc(key_size)
    cdef char *prev
    cdef int ret
    if key == NULL:
        raise MemoryError()
    try:
        for k, v in entries.items():
            _check(bpf_map_update_elem(fd, <const char *>k, <const char *>v, 0), f"updating {what}")
        stale = []
        prev = NULL
        while True:
            ret = bpf_map_get_next_key(fd, prev, key)
            if ret == -ENOENT:
                break
            _check(ret, f"listing {what}")
            k = key[:key_size]
            if k not in entries:
                stale.append(k)
            prev = key
        for k in stale:
            ret = bpf_map_delete_elem(fd, <const char *>k)
            if ret != -ENOENT:
                _check(ret, f"removing from {what}")
    finally:
        free(key)
    return 0


cdef int _tc_filters(int ifindex) except -1:
    """Filters of anyone on the clsact qdisc of ifindex, both directions (libbpf cannot
    list them; pyroute2 dumps them)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    count = 0
    try:
        with IPRoute() as ipr:
            for minor in (TC_H_MIN_INGRESS, TC_H_MIN_EGRESS):
                count += len(list(ipr.get_filters(index=ifindex, parent=(TC_H_CLSACT & 0xFFFF0000) | minor)))
    except NetlinkError as exc:
        _raise(exc.code, f"listing the tc filters of interface {ifindex}")
    return count


cdef int _open_pin(str path) except -1:
    fd = bpf_obj_get(os.fsencode(path))
    if fd < 0:
        _raise(-fd, f"opening the farm filter's {path}")
    return fd


cdef class Maps:
    """The pinned maps and programs of one loaded farm filter."""

    cdef dict fds
    cdef int prog_tc, prog_xdp
    cdef int config_fd, vips_fd, rules_fd, buckets_fd, nodes_fd, macs_fd, stats_fd

    def __cinit__(self):
        self.fds = {}

    def __init__(self, pin_dir: str):
        try:
            for name in (*_MAPS, *_PROGS.values()):
                self.fds[name] = _open_pin(os.path.join(pin_dir, name))
        except BaseException:
            self.close()
            raise
        self.config_fd = self.fds["lb_config"]
        self.vips_fd = self.fds["lb_vips"]
        self.rules_fd = self.fds["lb_rules"]
        self.buckets_fd = self.fds["lb_buckets"]
        self.nodes_fd = self.fds["lb_nodes"]
        self.macs_fd = self.fds["lb_node_macs"]
        self.stats_fd = self.fds["lb_stats"]
        self.prog_tc = self.fds["prog_tc"]
        self.prog_xdp = self.fds["prog_xdp"]

    def close(self) -> None:
        fds, self.fds = self.fds, {}
        # None when the garbage collector cleared it before __dealloc__.
        for fd in (fds or {}).values():
            os.close(fd)

    def __dealloc__(self):
        self.close()

    cdef int _ready(self) except -1:
        # Each call's error shows its own libbpf messages only.
        hk_log_reset()
        if not self.fds:
            _raise(EINVAL, "farm filter maps: closed")
        return 0

    def set_config(self, __u8 my_node, bytes my_mac, bytes vmac, bytes answer_mac, __u8 default_owner,
                   __u32 flags) -> None:
        cdef lb_config c
        cdef __u32 zero = 0
        self._ready()
        memset(&c, 0, sizeof(c))
        c.my_node = my_node
        c.default_owner = default_owner
        c.flags = flags
        _check_mac(my_mac, "my_mac")
        _check_mac(vmac, "vmac")
        _check_mac(answer_mac, "answer_mac")
        memcpy(c.my_mac, <const char *>my_mac, 6)
        memcpy(c.vmac, <const char *>vmac, 6)
        memcpy(c.answer_mac, <const char *>answer_mac, 6)
        _check(bpf_map_update_elem(self.config_fd, &zero, &c, 0), "updating lb_config")

    def config(self) -> dict:
        cdef lb_config c
        cdef __u32 zero = 0
        self._ready()
        _check(bpf_map_lookup_elem(self.config_fd, &zero, &c), "reading lb_config")
        return {"my_node": c.my_node, "my_mac": _raw(c.my_mac, 6), "vmac": _raw(c.vmac, 6),
                "answer_mac": _raw(c.answer_mac, 6), "default_owner": c.default_owner, "flags": c.flags}

    def set_vips(self, vips) -> None:
        cdef __u32 index
        self._ready()
        entries = {}
        for i, vip in enumerate(vips):
            index = i
            entries[_be32(vip)] = _raw(&index, sizeof(index))
        _sync_hash(self.vips_fd, entries, sizeof(__be32), "lb_vips")

    def set_rules(self, rules) -> None:
        cdef lb_rule_key key
        cdef lb_rule val
        self._ready()
        entries = {}
        for vip, port, proto, group, filter in rules:
            if proto not in _PROTOS:
                raise ValueError(f"rule protocol: tcp or udp, got {proto!r}")
            if not 0 <= group < LB_MAX_GROUPS:
                raise ValueError(f"rule group {group}: at most {LB_MAX_GROUPS} groups")
            if filter not in (LB_FILTER_ON_ADDR, LB_FILTER_ON_PORT, LB_FILTER_ON_IPID):
                raise ValueError(f"rule filter: unknown {filter!r}")
            memset(&key, 0, sizeof(key))
            memset(&val, 0, sizeof(val))
            addr = _be32(vip)
            memcpy(&key.vip, <const char *>addr, 4)
            key.port = socket.htons(port)
            key.proto = _PROTOS[proto]
            val.group = group
            val.filter = filter
            entries[_raw(&key, sizeof(key))] = _raw(&val, sizeof(val))
        _sync_hash(self.rules_fd, entries, sizeof(lb_rule_key), "lb_rules")

    cdef __u32 _group_base(self, int group) except? 0:
        if not 0 <= group < LB_MAX_GROUPS:
            raise ValueError(f"bucket group {group}: at most {LB_MAX_GROUPS} groups")
        return <__u32>group * LB_NBUCKETS

    def set_buckets(self, int group, bytes owners, bytes prevs) -> None:
        cdef __u32 keys[LB_NBUCKETS]
        cdef lb_bucket vals[LB_NBUCKETS]
        cdef __u32 count = LB_NBUCKETS
        cdef bpf_map_batch_opts opts
        self._ready()
        base = self._group_base(group)
        if len(owners) != LB_NBUCKETS or len(prevs) != LB_NBUCKETS:
            raise ValueError(f"buckets: {LB_NBUCKETS} owners and {LB_NBUCKETS} previous owners")
        memset(vals, 0, sizeof(vals))
        for i in range(LB_NBUCKETS):
            keys[i] = base + i
            vals[i].owner = owners[i]
            vals[i].prev = prevs[i]
        memset(&opts, 0, sizeof(opts))
        opts.sz = sizeof(opts)
        _check(bpf_map_update_batch(self.buckets_fd, keys, vals, &count, &opts),
               f"updating the buckets of group {group}")

    def buckets(self, int group) -> tuple:
        cdef __u32 key
        cdef lb_bucket b
        self._ready()
        base = self._group_base(group)
        owners = bytearray(LB_NBUCKETS)
        prevs = bytearray(LB_NBUCKETS)
        for i in range(LB_NBUCKETS):
            key = base + i
            _check(bpf_map_lookup_elem(self.buckets_fd, &key, &b), f"reading the buckets of group {group}")
            owners[i] = b.owner
            prevs[i] = b.prev
        return bytes(owners), bytes(prevs)

    def set_node(self, int index, bytes mac, bint up) -> None:
        cdef __u32 key = index
        cdef __u32 owner
        cdef lb_node node
        cdef lb_mac_key mkey
        cdef int ret
        self._ready()
        if not 0 <= index < LB_MAX_NODES:
            raise ValueError(f"node index {index}: at most {LB_MAX_NODES} nodes")
        _check_mac(mac, "node MAC")
        _check(bpf_map_lookup_elem(self.nodes_fd, &key, &node), "reading lb_nodes")
        old = _raw(node.mac, 6)
        memset(&mkey, 0, sizeof(mkey))
        # The node's previous MAC is no farm node's any more (unless another took it).
        if old != mac and old != bytes(6):
            memcpy(mkey.mac, node.mac, 6)
            if bpf_map_lookup_elem(self.macs_fd, &mkey, &owner) == 0 and owner == key:
                ret = bpf_map_delete_elem(self.macs_fd, &mkey)
                if ret != -ENOENT:
                    _check(ret, "removing from lb_node_macs")
        memset(&node, 0, sizeof(node))
        memcpy(node.mac, <const char *>mac, 6)
        node.up = up
        # All zeros: no MAC known, no farm node's frame comes from it.
        if mac != bytes(6):
            memcpy(mkey.mac, <const char *>mac, 6)
            owner = index
            _check(bpf_map_update_elem(self.macs_fd, &mkey, &owner, 0), "updating lb_node_macs")
        _check(bpf_map_update_elem(self.nodes_fd, &key, &node, 0), "updating lb_nodes")

    def stats(self) -> dict:
        cdef int ncpus = libbpf_num_possible_cpus()
        cdef lb_counters *per_cpu
        cdef int key
        self._ready()
        _check(ncpus, "counting the CPUs")
        # Per-CPU values come as one slot per possible CPU (lb_counters is 8-byte aligned).
        per_cpu = <lb_counters *>malloc(ncpus * sizeof(lb_counters))
        if per_cpu == NULL:
            raise MemoryError()
        try:
            out = {}
            for key in range(LB_STAT_MAX):
                _check(bpf_map_lookup_elem(self.stats_fd, &key, per_cpu), "reading lb_stats")
                packets = nbytes = 0
                for cpu in range(ncpus):
                    packets += per_cpu[cpu].packets
                    nbytes += per_cpu[cpu].bytes
                out[STATS[key]] = (packets, nbytes)
            return out
        finally:
            free(per_cpu)

    cdef __u32 _prog_id(self, int fd) except? 0:
        cdef bpf_prog_info info
        cdef __u32 size = sizeof(info)
        memset(&info, 0, sizeof(info))
        _check(bpf_obj_get_info_by_fd(fd, &info, &size), "reading the farm filter's program id")
        return info.id

    def attach(self, int ifindex, str hook, __u32 handle, __u32 priority) -> None:
        cdef bpf_tc_hook h
        cdef bpf_tc_opts o
        cdef int ret, drv
        self._ready()
        if _hook(hook) == "tc":
            _tc_init(&h, &o, ifindex, handle, priority)
            ret = bpf_tc_hook_create(&h)
            if ret != -EEXIST:
                _check(ret, f"adding the clsact qdisc to interface {ifindex}")
            o.prog_fd = self.prog_tc
            o.flags = BPF_TC_F_REPLACE
            _check(bpf_tc_attach(&h, &o), f"attaching the farm filter to interface {ifindex} (tc)")
            return
        drv = -EOPNOTSUPP
        if hook == "xdp":
            drv = bpf_xdp_attach(ifindex, self.prog_xdp, XDP_FLAGS_DRV_MODE, NULL)
            if drv == 0:
                return
        # The driver has no XDP of its own: the generic hook still runs before tc.
        ret = bpf_xdp_attach(ifindex, self.prog_xdp, XDP_FLAGS_SKB_MODE, NULL)
        if ret < 0:
            _raise(-ret, f"attaching the farm filter to interface {ifindex} (xdp; native: "
                   f"{os.strerror(-drv)}; generic)", True)

    def detach(self, int ifindex, str hook, __u32 handle, __u32 priority) -> None:
        cdef bpf_tc_hook h
        cdef bpf_tc_opts o
        cdef bpf_xdp_query_opts q
        cdef bpf_xdp_attach_opts a
        cdef __u32 mode = 0
        cdef __u32 mine
        cdef int ret
        self._ready()
        if _hook(hook) == "tc":
            _tc_init(&h, &o, ifindex, handle, priority)
            ret = bpf_tc_detach(&h, &o)
            # ENOENT: no such filter; EINVAL: no clsact qdisc (arguments were checked
            # above); ENODEV: the interface is gone, and its filters with it.
            if ret == -ENODEV:
                return
            if ret not in (-ENOENT, -EINVAL):
                _check(ret, f"detaching the farm filter from interface {ifindex} (tc)")
            # Other modules' filters keep the qdisc; a small race with one being
            # added right now is possible, tc offers nothing atomic here.
            if _tc_filters(ifindex) == 0:
                h.attach_point = <bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS)
                ret = bpf_tc_hook_destroy(&h)
                if ret not in (-ENOENT, -EINVAL):
                    _check(ret, f"removing the clsact qdisc of interface {ifindex}")
            return
        mine = self._prog_id(self.prog_xdp)
        if not _xdp_query(ifindex, &q):
            return
        if q.drv_prog_id == mine:
            mode = XDP_FLAGS_DRV_MODE
        elif q.skb_prog_id == mine:
            mode = XDP_FLAGS_SKB_MODE
        else:
            return
        # REPLACE with the expected program: another program put there meanwhile stays.
        memset(&a, 0, sizeof(a))
        a.sz = sizeof(a)
        a.old_prog_fd = self.prog_xdp
        ret = bpf_xdp_attach(ifindex, -1, mode | XDP_FLAGS_REPLACE, &a)
        if ret not in (-ENOENT, -EEXIST):
            _check(ret, f"detaching the farm filter from interface {ifindex} (xdp)")

    def attached(self, int ifindex, str hook, __u32 handle, __u32 priority) -> bool:
        cdef bpf_tc_hook h
        cdef bpf_tc_opts o
        cdef bpf_xdp_query_opts q
        cdef int ret
        self._ready()
        if _hook(hook) == "tc":
            mine = self._prog_id(self.prog_tc)
            _tc_init(&h, &o, ifindex, handle, priority)
            ret = bpf_tc_query(&h, &o)
            # As in detach: no such filter, no clsact qdisc, no interface.
            if ret in (-ENOENT, -EINVAL, -ENODEV):
                return False
            _check(ret, f"querying the tc filters of interface {ifindex}")
            return o.prog_id == mine
        mine = self._prog_id(self.prog_xdp)
        return _xdp_query(ifindex, &q) and mine in (q.drv_prog_id, q.skb_prog_id, q.hw_prog_id)

    def run(self, str hook, bytes frame) -> tuple:
        cdef bpf_test_run_opts o
        cdef __u32 out_size = len(frame) + 256
        cdef char *out
        self._ready()
        prog = self.prog_tc if _hook(hook) == "tc" else self.prog_xdp
        out = <char *>malloc(out_size)
        if out == NULL:
            raise MemoryError()
        try:
            memset(&o, 0, sizeof(o))
            o.sz = sizeof(o)
            o.data_in = <const char *>frame
            o.data_size_in = len(frame)
            o.data_out = out
            o.data_size_out = out_size
            o.repeat = 1
            _check(bpf_prog_test_run_opts(prog, &o),
                   f"test-running the farm filter ({hook})")
            # tc's verdicts include TC_ACT_UNSPEC (-1).
            return <int>o.retval, out[:o.data_size_out]
        finally:
            free(out)


cdef str _hook(str hook):
    if hook not in _HOOKS:
        raise ValueError(f"hook: tc, xdp or xdpgeneric, got {hook!r}")
    return hook


cdef int _tc_init(bpf_tc_hook *h, bpf_tc_opts *o, int ifindex, __u32 handle, __u32 priority) except -1:
    # Both name one filter: 0 would let the kernel choose, and no later call could find it.
    if not handle or not 0 < priority <= 0xFFFF:
        raise ValueError(f"tc filter handle {handle} and priority {priority}: 1 or more, priority at most 65535")
    memset(h, 0, sizeof(h[0]))
    h.sz = sizeof(h[0])
    h.ifindex = ifindex
    h.attach_point = BPF_TC_INGRESS
    memset(o, 0, sizeof(o[0]))
    o.sz = sizeof(o[0])
    o.handle = handle
    o.priority = priority
    return 0


cdef bint _xdp_query(int ifindex, bpf_xdp_query_opts *q) except -1:
    """False: no such interface (so nothing attached to it)."""
    memset(q, 0, sizeof(q[0]))
    q.sz = sizeof(q[0])
    ret = bpf_xdp_query(ifindex, 0, q)
    if ret == -ENODEV:
        return False
    _check(ret, f"querying the XDP program of interface {ifindex}")
    return True
