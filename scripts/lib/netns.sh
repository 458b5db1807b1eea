# The network-namespace scripts' shared pieces (sourced, not run): tool
# checks, namespaces with their loopback up, veth pairs, the star topology
# (one host namespace, one namespace per viewer) and cleanup.
#
#   source "$(dirname "$0")/lib/netns.sh"
#   need_tools WHO ip nft                   fail loudly if one is missing
#   ns_add NS...                            new namespaces, loopback up
#   ns_pair NS_A DEV_A ADDR_A NS_B DEV_B ADDR_B [GSO_MAX_SEGS]
#                                           a veth pair between two
#                                           namespaces, addressed and up
#   ns_star HOST_NS PREFIX HOST_DEV CLIENT_DEV CLIENT_NS...
#                                           client i (from 1) joined to the
#                                           host by HOST_DEV$i / CLIENT_DEV$i,
#                                           PREFIX.i.1/30 and PREFIX.i.2/30
#   ns_cleanup                              delete every namespace ns_add
#                                           made (their veths go with them)
#   kill_pids                               kill every process in the
#                                           caller's PIDS array
#
# Names must be unique to the run (suffix $$): other runs use namespaces
# at the same time. Addresses come from 198.18.0.0/15, the range set aside
# for benchmarking. Every function exits the script on failure (set -e).

NETNS_CREATED=()

# need_tools WHO TOOL...: each TOOL on the PATH, or WHO says which is not.
need_tools() {
    local who=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$who: FAILED: $tool is missing" >&2; exit 1; }
    done
}

# ns_add NS...: new namespaces with loopback up, deleted by ns_cleanup.
ns_add() {
    local ns
    for ns in "$@"; do
        ip netns add "$ns"
        NETNS_CREATED+=("$ns")
        ip -n "$ns" link set lo up
    done
}

# ns_pair NS_A DEV_A ADDR_A NS_B DEV_B ADDR_B [GSO_MAX_SEGS]: a veth pair,
# DEV_A in NS_A with ADDR_A (address/prefix), DEV_B in NS_B with ADDR_B,
# both up. GSO_MAX_SEGS=1 makes the kernel segment GSO super-packets before
# the veth, as a real NIC's wire would see them (tbf and nftables then see
# datagrams one by one).
ns_pair() {
    local ns_a=$1 dev_a=$2 addr_a=$3 ns_b=$4 dev_b=$5 addr_b=$6 segs=${7:-}
    local gso=()
    [[ -n "$segs" ]] && gso=(gso_max_segs "$segs")
    ip link add "$dev_a" netns "$ns_a" type veth peer name "$dev_b" netns "$ns_b"
    ip -n "$ns_a" addr add "$addr_a" dev "$dev_a"
    ip -n "$ns_b" addr add "$addr_b" dev "$dev_b"
    ip -n "$ns_a" link set "$dev_a" "${gso[@]}" up
    ip -n "$ns_b" link set "$dev_b" "${gso[@]}" up
}

# ns_star HOST_NS PREFIX HOST_DEV CLIENT_DEV CLIENT_NS...: HOST_NS and one
# namespace per client, client i (from 1) joined to the host by its own
# veth pair HOST_DEV$i (PREFIX.i.1/30) -- CLIENT_DEV$i (PREFIX.i.2/30).
ns_star() {
    local host=$1 prefix=$2 host_dev=$3 client_dev=$4 i=0 ns
    shift 4
    ns_add "$host" "$@"
    for ns in "$@"; do
        i=$((i + 1))
        ns_pair "$host" "$host_dev$i" "$prefix.$i.1/30" "$ns" "$client_dev$i" "$prefix.$i.2/30"
    done
}

# ns_cleanup: delete every namespace ns_add made; safe to call twice.
ns_cleanup() {
    local ns
    for ns in "${NETNS_CREATED[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    NETNS_CREATED=()
}

# kill_pids: kill every process the script started and recorded in its
# PIDS array (unset or empty: nothing); safe to call twice.
kill_pids() {
    local p
    for p in "${PIDS[@]:-}"; do
        [[ -n "$p" ]] && kill "$p" 2>/dev/null || true
    done
}
