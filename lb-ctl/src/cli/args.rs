//! The clap definitions of every command and option: the whole manual that `--help` prints.
//! Dispatch is in `main.rs`; this file only says what the command line accepts.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    config,
    maps::{
        loader::Sizes,
        pins::{self, Mode},
    },
};

pub const ABOUT: &str =
    "Control an XDP load balancer that forwards like IPVS in direct-routing (LVS-DR) mode";

pub const LONG_ABOUT: &str = "\
Control an XDP load balancer that forwards like IPVS in direct-routing (LVS-DR) mode.

An XDP program on the director's interface takes each packet to a virtual service
(VIP, port, protocol), picks a real server for its flow, rewrites the destination MAC to
that server's and sends the frame back out. The server holds the VIP on its loopback and
answers the client directly. Everything else goes to the kernel untouched.

Typical use:
  lb-ctl attach eth0                   load the program, attach it, pin it
  lb-ctl apply -f services.yaml        set services and backends (all or nothing)
  lb-ctl list                          the ipvsadm -L -n view
  lb-ctl stats --prometheus            counters for a scraper
  lb-ctl detach eth0                   remove it again
  lb-ctl run -f services.yaml --iface eth0
                                       all of it as a daemon, with keepalived's health
                                       checks and VRRP (see `lb-ctl run --help`)
  lb-ctl decap attach eth0             on a real server of a tunnel service: take off the
                                       director's IPIP or GUE header (`lb-ctl decap --help`)
  lb-ctl realserver up --vip VIP       on a real server: the VIP on lo and the ARP sysctls;
                                       `down` undoes exactly that (`lb-ctl realserver --help`)
  lb-ctl doctor -f services.yaml       on a director: each thing it and its real servers
                                       need, ok or FAIL with the fix

The program and its maps are pinned under --pin-dir, so the data path keeps forwarding
after each command exits. Every command but genhash needs root (or CAP_BPF and
CAP_NET_ADMIN).";

#[derive(Parser)]
#[command(name = "lb-ctl", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args)]
pub struct Global {
    /// Directory on a bpf filesystem where the program, its links and its maps are pinned.
    /// /sys/fs/bpf is mounted if it is not. One directory serves one network namespace.
    #[arg(long, global = true, env = "LB_PIN_DIR", default_value = pins::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,

    /// Run inside the network namespace NAME (/run/netns/NAME, as `ip netns add` makes
    /// them). Unlike `ip netns exec`, this keeps the host's /sys/fs/bpf, and so the pins.
    #[arg(long, global = true, value_name = "NAME")]
    pub netns: Option<String>,

    /// How long attach, detach and apply wait for another writer of the same pin directory
    /// (one writer at a time). While `lb-ctl run` owns the directory they are refused at once.
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub wait: Duration,

    /// How `run` and `vrrp` write their log (stderr): text lines, or one JSON object a line
    /// (timestamp, level, fields with the message, target) for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How the daemons write their log lines (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines of text: time, level, target, message, fields.
    #[default]
    Text,
    /// One JSON object a line: timestamp, level, fields (message and the rest), target.
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Load the program, attach it to an interface and pin it.
    #[command(long_about = "\
Load the XDP program, attach it to IFACE and pin the program, the link and every map
under --pin-dir, so the data path keeps forwarding after this command exits.

The interface's MAC is registered: the program acts only on frames sent to it. The
interface table is an array indexed by ifindex: an interface whose index is 65536 or more
is refused. Attaching an interface that is already attached does nothing. Attaching a
second interface shares the same maps (services, backends, connections, counters).

Maps pinned by another version of lb-ctl whose layout differs from this version's are
refused by name, before anything is loaded: detach every interface that uses them (which
removes the pins and forgets the connections in them), then attach again.

Native mode runs in the driver and is what production uses; when a driver cannot, the
error says so and --mode generic works on any interface.")]
    Attach {
        /// The interface that receives traffic for the VIPs.
        iface: String,
        /// native: in the driver (default); generic: in the kernel's generic path.
        #[arg(long, value_enum, default_value_t = Mode::Native)]
        mode: Mode,
        /// Entries of the backend lookup table shared by all services (4 bytes each).
        /// Only the first attach creates the maps; later ones reuse them.
        #[arg(long, default_value_t = Sizes::default().table_entries)]
        table_entries: u32,
        /// Entries of the connection table: established TCP connections and UDP flows
        /// (least recently used entries are evicted). Each takes 128 bytes of kernel memory:
        /// 32 MiB at the default, 128 MiB at 1048576. Each CPU holds its share (entries /
        /// CPUs): size it for the flows one CPU sees, times the CPUs.
        #[arg(long, default_value_t = Sizes::default().flows)]
        flows: u32,
        /// Slots of the half-open table (a power of two, 64 bytes each): TCP connections
        /// between the client's SYN and its ACK. A SYN takes the slot its flow hashes to,
        /// evicting the half-open connection there: a SYN flood evicts only these, never an
        /// established connection.
        #[arg(long, default_value_t = Sizes::default().syns)]
        syn_flows: u32,
    },
    /// Detach the program from an interface; with no interface left, remove all pins.
    Detach {
        /// An interface given to `attach`.
        iface: String,
    },
    /// Apply a YAML service file: validate it whole, then write only the difference.
    #[command(long_about = "\
Apply a YAML service file to the running data path.

The whole file is validated first; any error (named by file, line and field) applies
nothing. FILE must be a regular file (after symlinks) of at most 16 MiB, nested at most 64
deep; values quoted in errors are cut to 64 characters and control characters escaped.
Addresses are IPv4 or IPv6; a service's VIP, its route backends and its sorry server have
one family (direct routing forwards packets unchanged); a tunnel backend may have either. Addresses must be unicast: not in 0.0.0.0/8,
127.0.0.0/8, 224.0.0.0/4, 240.0.0.0/4 or 255.255.255.255; for IPv6 not ::, ::1, ff00::/8,
fe80::/10 or IPv4-mapped (::ffff:a.b.c.d). A backend or sorry server that is an address of an attached interface,
or the broadcast address of one of its subnets, is an error too. One writer at a time:
apply waits (at most --wait) for another apply, attach or detach of the same pin
directory, and is refused while `lb-ctl run` owns it (the daemon applies its own file,
with its health results; change that file instead). Then the desired map contents are
computed and only the difference is written,
in an order that never shows a packet a half-written service: a changed service's new
backend table is written into an idle region and the service switched to it in one
update. Applying the same file twice changes nothing the second time.

Backend MACs come from the kernel's neighbour tables of the attached interfaces, ARP for
IPv4 and NDP for IPv6 (the kernel is asked to resolve missing ones). A backend that cannot be resolved, or is not on
the director's link, gets no traffic and is reported; it does not block the rest.

Tunnels (`forward: tunnel`, LVS -i): the packet goes inside an outer header (IPIP, or GUE
over UDP) to a real server anywhere routable, of either family; the data path asks the
kernel's FIB for the next hop per packet, so a tunnel backend needs no MAC of its own. Its
outer source is `tunnel.source`, else the source of the kernel's route to the backend (`ip
route get BACKEND`); a backend without a route gets no traffic and is reported. `lb-ctl
run` looks the routes up again at every reconcile tick, and keeps each route's next hop
resolved with a managed neighbour entry (`ip neigh replace HOP dev IFACE managed`). The
attached interfaces must forward the outer family (net.ipv4.conf.IFACE.forwarding=1,
net.ipv6.conf.IFACE.forwarding=1 for IPv6 backends): else the kernel's FIB answers no
next hop and tunnel packets pass to the kernel (pass_no_route). `apply`, `run`, `list` and
`stats --json` (forwarding_off) warn about it; lb-ctl never changes these sysctls.

Example file:
  services:
    - name: web
      vip: 192.168.58.133
      port: 80            # 0 = every port of the VIP
      protocol: tcp       # tcp | udp
      scheduler: wrr      # rr | wrr | sh | mh | lc | wlc
      backends:
        - address: 192.168.58.135
          weight: 1       # 0 = drain: existing flows stay, no new ones
        - address: 192.168.58.136
    - name: web6
      vip: \"fd00:58::133\"
      port: 80
      persistence:
        timeout: 50s
        netmask: 64       # IPv6: a prefix length (IPv4: a dotted mask, 255.255.255.0)
      backends:
        - address: \"fd00:58::135\"
    - name: tunnelled
      vip: 192.168.58.133
      port: 8080
      forward: tunnel     # route (default) | tunnel; a backend may override it
      tunnel:             # optional: IPIP from the route's source by default
        type: gue         # ipip (default) | gue
        port: 6080        # gue only; default 6080
        source: 192.168.58.134   # optional outer source (the backend's family)
      backends:
        - address: 10.20.0.11       # behind a router
        - address: \"fd00:20::11\"   # IPv4 in IPv6, in a tunnel only
          tunnel: { type: ipip, source: \"fd00:58::134\" }
        - address: 192.168.58.135
          forward: route  # on the segment
  flood:                # optional: the budget of new entries
    new_flows_per_cpu: 200000   # per CPU per second; 0 = no limit

Under a SYN flood: a SYN's entry is half-open (its own table, `attach --syn-flows`) until
the client's ACK comes through the director, so spoofed SYNs evict only half-open entries,
never an established connection. `flood.new_flows_per_cpu` bounds the new entries (half-open
TCP, new UDP flows) each CPU makes per second: past it, mh and sh forward by their hash
without an entry (stats: forwarded_over_budget), rr, wrr, lc and wlc drop (stats:
drop_over_budget). Removing the block lifts the limit.")]
    Apply {
        /// The service file.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Print the difference and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// How long to wait for backends to answer ARP (IPv4) or NDP (IPv6).
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
        resolve_timeout: Duration,
    },
    /// List services and backends like `ipvsadm -L -n`.
    #[command(long_about = "\
List the services and their backends like `ipvsadm -L -n`: protocol, VIP:port, scheduler,
and for each backend its address:port, forwarding method (Route: direct routing; Tunnel:
IPIP or GUE, as ipvsadm shows -i),
weight, ActiveConn (live TCP entries in SYN or ESTABLISHED, half-open ones included: what lc
and wlc compare) and InActConn (the other live entries: FIN, RST, UDP), the connections,
packets and bytes it was sent, and its state (up, draining, unresolved). The first line gives
the connection table's entries in use of its size, the half-open table's apart (TCP between
the client's SYN and its ACK: a SYN flood fills this one), and the new-entry budget when the
service file's `flood:` sets one. IPv6 is written as ipvsadm writes it,
[fd00:58::133]:80; persistence shows `mask 255.255.255.0` for IPv4, `mask 64` for IPv6.

With --connections, lists the connection table and the half-open table (state SYN_RECV)
instead, like `ipvsadm -L -n -c`: protocol,
time until the entry expires (IPVS's timeouts: 900 s established, 120 s after a FIN, 30 s
for a SYN, 300 s UDP), state as the director sees it (only client-to-server packets pass
it), client, virtual address and backend.

Only a TCP SYN (or a UDP datagram) makes an entry and counts in ActiveConn, as IPVS with
sloppy_tcp off: a TCP packet that is not a SYN and has no live entry makes none. mh and sh
forward it to their hash's pick (stats: forwarded_stateless), rr, wrr, lc and wlc drop it
(stats: drop_no_flow).

With --stats, totals like `ipvsadm -L -n --stats`: Conns (connections scheduled), InPkts,
OutPkts, InBytes (IP bytes), OutBytes per service and backend. With --rate, per-second rates
like `ipvsadm -L -n --rate`: CPS, InPPS, OutPPS, InBPS, OutBPS. The rates are the difference
of two reads of the per-CPU counters --interval apart (1s by default), divided by the time
between the reads and rounded: the average over that one interval, where IPVS shows a
moving average that its kernel estimator updates every 2 seconds. So `list --rate` takes
--interval to answer. OutPkts, OutBytes, OutPPS and OutBPS are always 0, as ipvsadm shows
them for direct routing and tunnel services: the replies go from the real server to the
client and never pass the director.")]
    List {
        /// Show the connection table (like ipvsadm -L -n -c).
        #[arg(long, short = 'c', conflicts_with_all = ["stats", "rate"])]
        connections: bool,
        /// Totals: Conns, InPkts, OutPkts, InBytes, OutBytes (like ipvsadm -L -n --stats).
        #[arg(long, conflicts_with = "rate")]
        stats: bool,
        /// Per-second rates: CPS, InPPS, OutPPS, InBPS, OutBPS (like ipvsadm -L -n --rate),
        /// over --interval.
        #[arg(long)]
        rate: bool,
        /// With --rate: the time between the two reads of the counters.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration, requires = "rate")]
        interval: Duration,
    },
    /// Print counters: per service and backend, and per data-path reason.
    #[command(long_about = "\
Print counters summed over CPUs: per service and per backend, connections (new flows),
packets and IP bytes; and the packets the data path forwarded, passed to the kernel or
dropped, by reason.

Reasons: forwarded (tx, by the connection table or the scheduler), forwarded_stateless (tx:
a TCP non-SYN of no known connection to an mh or sh service, sent to the backend its hash
picks without making an entry), forwarded_icmp (tx: an ICMP or ICMPv6 error, such as
\"fragmentation needed\" or \"packet too big\", about a VIP flow, sent to that flow's
backend so that path-MTU discovery works for the real servers), forwarded_fragment (tx: a
later fragment of a datagram, to the backend its first fragment went to); passed to the
kernel: pass_not_ip, pass_not_tcp_udp (echo requests and other ICMP too), pass_not_vip,
pass_other_mac, pass_unknown_iface, pass_fragment (a later fragment of no datagram whose
first fragment was forwarded), pass_malformed, pass_header_chain (more than four IPv6
extension headers), pass_icmp_no_flow (an ICMP error about a VIP flow with no entry under
rr, wrr, lc or wlc, or whose quote is truncated); dropped: drop_no_backend (no usable
backend), drop_bad_backend (an empty table slot), drop_no_flow (a TCP non-SYN of no known
connection to an rr, wrr, lc or wlc service: no RST is sent back). Over the new-entry
budget (`flood.new_flows_per_cpu` of the service file, per CPU per second): forwarded_over_budget
(tx: a new flow to an mh or sh service, sent to the backend its hash picks without making an
entry), drop_over_budget (dropped: a new flow to an rr, wrr, lc or wlc service). Under the
reasons: the connection table's live entries of its size (established, closing, UDP), the
half-open table's apart, and the budget when one is set.

--json prints an object with services[] (name, vip, port, protocol, scheduler, packets,
bytes, connections, backends[] with address, port, weight, forward (route, ipip or gue;
tunnels add tunnel_source, and GUE tunnel_port), usable, packets, bytes, connections,
active_connections, inactive_connections), datapath[] (reason, action,
packets), flows and flows_capacity (the connection table), half_open and half_open_capacity
(the half-open table), new_flows_per_cpu (the budget; 0 = no limit), and forwarding_off[] (interface, family, sysctl) when an attached interface does
not forward a family the tunnel backends need. --prometheus prints the text exposition
format with metrics named lb_* (lb_flows, lb_half_open_entries, lb_half_open_capacity,
lb_new_flows_per_cpu among them); backend series carry a forward label (route, ipip, gue).
--watch SECONDS redraws every SECONDS with per-second rates (like ipvsadm --rate).")]
    Stats {
        /// JSON instead of a table.
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// Prometheus text format instead of a table.
        #[arg(long)]
        prometheus: bool,
        /// Redraw every SECONDS with per-second rates, until interrupted.
        #[arg(long, value_name = "SECONDS")]
        watch: Option<f64>,
        /// With --watch: stop after this many redraws.
        #[arg(long, value_name = "N", requires = "watch")]
        count: Option<u64>,
    },
    /// Print what the maps hold as ipvsadm rules (--ipvsadm) or a service file (--yaml).
    #[command(long_about = "\
Print the running configuration, what the data path's maps hold now, in another form.

--ipvsadm prints it as `ipvsadm -S -n` does, one rule a line, for `ipvsadm -R` on a host
with IPVS or to compare with one: `-A -t VIP:PORT -s SCHED [-p TIMEOUT [-M MASK]]` per
service (-u for UDP; IPv6 as [addr]:port; an all-ports service as port 0; mh as `-s mh -b
mh-port`, since it hashes the source port too) and `-a -t VIP:PORT -r RIP:PORT -g -w WEIGHT`
per real server (-i for a tunnel, with `--tun-type ipip` or `--tun-type gue --tun-port N
--tun-nocsum`). Services are sorted as ipvsadm sorts them (IPv4 first, TCP first, then
address and port), real servers by address and port. A backend held down by health checks
is left out (IPVS would not have it); a drained or inhibited one is written with -w 0. What
ipvsadm -R would refuse (an all-ports service without persistence) is written anyway and
named on standard error.

--yaml prints a service file that `lb-ctl apply` takes: each service's VIP, port, protocol,
scheduler, table size and persistence, and its backends with their weights and forwarding.
The maps hold no health check, sorry server, quorum, notify script, vrrp:, sync: or
announce:; a comment at the top says so. Backends held down by health checks are written
(they are configured) with a comment, and a tunnel's outer source is a comment (the maps do
not say whether it was configured or the route's).

Both read only the maps: while `lb-ctl run` runs for these pins, its file is the whole
configuration and the export is what it applied.

Going back to IPVS: `lb-ctl export --ipvsadm | ipvsadm -R`.")]
    #[command(group(clap::ArgGroup::new("format").required(true).args(["ipvsadm", "yaml"])))]
    Export {
        /// ipvsadm rules, as `ipvsadm -S -n` prints them.
        #[arg(long)]
        ipvsadm: bool,
        /// A service file for `lb-ctl apply`.
        #[arg(long)]
        yaml: bool,
    },
    /// Run as a daemon: attach, apply, health-check every backend, reload on SIGHUP.
    #[command(long_about = "\
Run as a daemon, the job keepalived does for IPVS: attach to every --iface (or adopt an
existing attachment), apply FILE, then check every backend of every service that has a
`check:` block and keep the data path in line with the results. A backend that fails
`retries` checks in a row is marked down (no new flows; its existing flows are rescheduled)
and comes back after `rise` good checks. Transitions are logged to stderr with their reason
(RUST_LOG=debug shows every failed check).

Reloading FILE: SIGHUP reloads it at once. FILE is also watched (every second): replaced
by a rename (`mv services.yaml.new services.yaml`, the recommended way) it is reloaded at
once; changed in place, it is reloaded only after its content (size, modification time and
a hash) has stayed the same for --reload-settle (default 5s), so a half-written file is
never applied. Either way it is validated first; a bad file (also a FIFO, a device, a
directory, a file over 16 MiB or nested over 64 deep) is refused and logged, and the
running config keeps forwarding: the daemon never stops because of the file.

The daemon is the only writer of the pin directory while it runs: it holds its lock, and
`lb-ctl apply`, `attach` and `detach` are refused (change FILE instead). It reconciles: a
backend's MAC follows the kernel's neighbour tables as soon as it changes (a gratuitous ARP;
for IPv6 an unsolicited neighbour advertisement), a backend whose neighbour entry FAILED
gets no traffic, and every --reconcile-interval the
pins (a detached interface, a removed pin) and the maps (anything written by hand) are put
back to what it wants, each repair logged; the same tick recounts the active connections and
rebuilds the connection table's membership bitmap (which spares a new flow its lookup) from
the entries that are still there. Tunnel backends' next hops get managed neighbour
entries (removed when no backend uses them, and on exit with --detach-on-exit); an attached
interface that does not forward what they need is logged when that starts and when it ends. The data path's records (a drop_bad_backend's
service, slot and backend, at most once per CPU per second) are logged with target datapath.

SIGTERM or SIGINT stops the checks and leaves the data path forwarding, unless
--detach-on-exit.

Scale-out (`announce:`, per service or at the top level): while a service is healthy enough
(withdraw_when: no_backend, the default: a backend up with weight > 0, a sorry server does
not count; below_quorum: its quorum holds) the daemon keeps the route `VIP/32` (IPv6 /128)
`dev lo proto 250` in routing table `table` (default 100), which the local BGP speaker
(BIRD, FRR, GoBGP/ExaBGP) imports and announces; otherwise the route is deleted (withdrawn).
A VIP shared by several services is announced while any of them is healthy enough. The
daemon owns protocol-250 routes in those tables: at start it removes leftovers, a reload
follows the file, and every --reconcile-interval a route deleted or changed by hand is put
back (logged). With `announce`, SIGTERM/SIGINT first withdraws every route (`withdrawn;
draining for N`), keeps running (checks, forwarding) for the longest `drain`, then stops; a
second signal stops at once. `list` and `stats` show each service's state.
  announce:
    via: bird                  # bird | frr | kernel (the same route; names the speaker)
    table: 100                 # 1..=4294967295, not 253/254/255
    withdraw_when: no_backend  # no_backend | below_quorum (needs `quorum`)
    drain: 5s                  # default 0s

Connection-state sync (`sync:`, IPVS's sync daemon): the sending director reads its
connection table and persistence entries every `interval` and sends what is new or changed
(and every live entry again within an eighth of its timeout) to `peers` over UDP, at most
`batch` entries a datagram and `max_rate` entries a second, each datagram signed with
HMAC-SHA256 of the shared key, with a sender id, a sequence number and a timestamp; the
receiving director maps each entry's service (VIP, port, protocol) and backend (address,
port) to its own ids and installs it unless its own entry is as recent. So a VRRP takeover
keeps every connection on its real server whatever the scheduler. Datagrams that are
garbage, truncated, of another version, with a bad HMAC, replayed or stale (clock more
than 60 s away) are counted and ignored. `list` and `stats` show a `Sync` line.
  sync:
    interface: eth0            # required
    peers: [192.168.58.137]    # IPv4 unicast; absent = multicast 224.0.0.81
    port: 8848                 # default 8848
    key_file: /etc/lb/sync.key # or key: TEXT; at least 16 bytes
    role: auto                 # auto (send while a VRRP instance on `interface` is
                               # master, receive otherwise) | master | backup | both
    batch: 20                  # 1..=20 entries a datagram (fits a 1500-byte MTU)
    interval: 200ms            # 10ms..=60s
    max_rate: 10000            # entries a second, 1..=1000000

Backends checked the same way (address, port, check settings; exec also service and port)
share one probe, so a real server listed by many services is checked once per interval.
Transitions are applied in batches (one apply per 100 ms at most) and, when many, logged as
one summary line. Every --summary-interval the daemon logs how many checks ran and how late
they started against their schedule (p50/p99/max), and how many waited for one of the
--max-concurrent-checks slots. Backend MACs need one kernel neighbour entry each: when the
kernel's table is full (net.ipv4.neigh.default.gc_thresh3, 1024 by default, shared by all
namespaces) the log says so once, with the value to raise it to.

`exec` checks and notify hooks run `/bin/sh -c` in a process group of their own; the whole
group is killed (SIGKILL) when the command ends, times out (hooks: --hook-timeout), its
check is replaced by a reload, or the daemon stops. Processes that leave the group on
purpose (setsid) are not tracked.

Check block (per service; a backend may carry its own `check:` overriding keys):
  check:
    type: http_get        # http_get | https_get | tcp | exec
    path: /               # http(s)_get
    status: [200]         # http(s)_get
    digest: <md5>         # http(s)_get, optional; `lb-ctl genhash` prints it
    host: www.example.com # http(s)_get, optional Host header
    port: 80              # default: the backend's port
    command: /path/chk    # exec; LB_BACKEND_ADDRESS, LB_BACKEND_PORT, LB_SERVICE in env
    via_vip: false        # tcp; true: a handshake with VIP:port sent to the backend's MAC
                          # (as the data path sends clients' packets), so a real server
                          # that lost the VIP on lo is down; direct-routing backends only
    interval: 1s          # keepalived delay_loop
    timeout: 1s
    retries: 2            # failures in a row before down
    retry_delay: 500ms    # wait before retrying after a failure
    rise: 1               # successes in a row before up
    warmup: 0s            # the first check comes up to this late (0s: within the
                          # first interval, spread over the backends)
    alpha: false          # true: a new backend starts down (no traffic) until its
                          # first good check(s), as keepalived's alpha
Service options: sorry_server, inhibit_on_failure, quorum, hysteresis, notify_up,
notify_down (see the README).

VRRP (`vrrp:`, `vrrp_scripts:`, `vrrp_sync_groups:`; see `lb-ctl vrrp --help`) runs beside
the services. An instance with `track_service: [NAME]` follows the health of that service
(no backend up with a weight above 0 = failed: a fault with weight 0, else the priority
moves by the weight). A reload applies a changed `vrrp:` part without a restart: unchanged
instances keep running untouched, changed ones take the change in place, keeping their
state (a changed interface, router id, version, password, peers or sync group restarts
just that instance).")]
    Run {
        /// The service file.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// An interface to attach to (repeat for more); attached ones are adopted.
        #[arg(long = "iface", value_name = "IFACE", required = true)]
        ifaces: Vec<String>,
        /// XDP mode for interfaces that are not attached yet.
        #[arg(long, value_enum, default_value_t = Mode::Native)]
        mode: Mode,
        /// Detach from the interfaces on SIGTERM/SIGINT (default: keep forwarding).
        #[arg(long)]
        detach_on_exit: bool,
        /// How long to wait for backends to answer ARP (IPv4) or NDP (IPv6).
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
        resolve_timeout: Duration,
        /// Checks running at the same time, at most.
        #[arg(long, value_name = "N", default_value_t = 256)]
        max_concurrent_checks: usize,
        /// How often the daemon compares the pins and the maps with what it wants (file,
        /// health, neighbour MACs) and repairs any difference.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
        reconcile_interval: Duration,
        /// How long a notify hook may run before its process group is killed.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
        hook_timeout: Duration,
        /// How long FILE, changed in place, must stay unchanged before it is reloaded
        /// (a rename over FILE, or SIGHUP, reloads at once).
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
        reload_settle: Duration,
        /// How often the daemon logs its summary: how late checks started against their
        /// schedule (p50, p99, max), how many waited for a --max-concurrent-checks slot, how
        /// many backends are down, and the warnings that still hold.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
        summary_interval: Duration,
        /// Serve over HTTP at ADDR:PORT (a bare PORT: 127.0.0.1:PORT): `/metrics`
        /// (Prometheus: the names of `stats --prometheus`, backend and VRRP states, check
        /// durations, transitions), `/api/v1/status` (JSON: `stats --json` with rates and the
        /// last 100 events) and `/`, a page that refreshes every second. Off by default; no
        /// authentication: keep it on localhost or a management network.
        #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
        listen: Option<SocketAddr>,
    },
    /// Run only the VRRP instances of FILE (the `vrrp:` list), until SIGTERM or SIGINT.
    #[command(long_about = "\
Run only the VRRP instances of FILE's `vrrp:` list (no XDP, no services), until SIGTERM or
SIGINT; then a master hands over at once with a priority-0 advert and removes its addresses.
The master holds the virtual addresses on its interface and announces them with gratuitous
ARP (IPv6: unsolicited neighbour advertisements). Transitions and invalid adverts are logged
to stderr; on exit each instance logs its counters. Speaks VRRP v2 (RFC 3768, optional
auth_type PASS) and v3 (RFC 5798, IPv4 and IPv6) with keepalived.

Instance block (see `lb-ctl run` for services):
  vrrp:
    - name: VI_1
      interface: eth0
      virtual_router_id: 51
      priority: 150               # 1-254; 255 = address owner; default 100
      advert_interval: 1s         # v3: 10ms steps
      virtual_addresses: [192.168.58.133/32]
      preempt: true
      preempt_delay: 0s
      version: 2                  # 2 | 3
      auth_pass: \"1111\"           # v2 only, optional
      unicast_peers: []           # empty = multicast 224.0.0.18
      garp_count: 5
      garp_delay: 1s
      notify_master: /usr/local/bin/master.sh
      notify_backup: /usr/local/bin/backup.sh
      notify_fault: /usr/local/bin/fault.sh
      garp_master_refresh: 0s     # while master, gratuitous ARPs again every this
      garp_master_refresh_repeat: 1
      track_script: [chk_web]     # or {name: chk_web, weight: -20}
      track_interface: [eth1]     # or {name: eth1, weight: -20}; down = failed
      track_service: [web]        # `lb-ctl run` only (here services count as healthy)
    - name: VI_6                  # IPv6: a second instance (one family per instance)
      interface: eth0
      virtual_router_id: 52
      virtual_addresses: [fd00:58::133]   # /128 by default; added nodad
      advert_interval: 200ms      # version 3 (the default for IPv6; 2 is an error)
      unicast_peers: []           # empty = multicast ff02::12; else the peers' link-local
                                  # addresses (adverts come from the link-local address)
  vrrp_scripts:                   # keepalived's vrrp_script
    - name: chk_web
      script: \"curl -sf http://127.0.0.1/\"   # /bin/sh -c; exit 0 = success
      interval: 1s
      timeout: 1s                 # default: the interval; then killed
      weight: 0                   # -254..254; 0: failure = fault; > 0: + while it
                                  # succeeds; < 0: + (i.e. -) while it fails
      rise: 1
      fall: 1
  vrrp_sync_groups:               # keepalived's vrrp_sync_group: they move together
    - name: G1
      instances: [VI_1, VI_6]

SIGHUP reads FILE again and applies its VRRP part without a restart, as `lb-ctl run` does on
a reload; a file with errors is refused and the running instances stay.")]
    Vrrp {
        /// The file with the `vrrp:` list.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// How long a notify hook may run before its process group is killed.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
        hook_timeout: Duration,
    },
    /// On a real server: take off the tunnel headers of tunnel-mode services (status, attach,
    /// detach).
    #[command(long_about = "\
On a real server of a tunnel-mode service (`forward: tunnel`): attach an XDP program that
takes off the outer header the director put on, for kernels without the ipip, ip6tnl or
fou modules. Without a subcommand, prints where it is attached, its settings and its
counters.

It decapsulates, behind Ethernet and up to two VLAN tags: IP in IPv4 (protocol 4 or 41;
any IHL, header checksum verified), IP in IPv6 (next header 4 or 41 right after the fixed
header) and GUE (outer IPv4 or IPv6, UDP to --gue-port; variant 1, the inner IP header right
after UDP, or variant 0 with a 4-byte header without extension fields, flags or control).
The inner header must be whole, of the family the outer header names, and end within the
outer packet; then the frame goes to the stack as the inner packet, behind the same L2
header with the inner family's EtherType. Everything else passes untouched: the server's
own traffic, other UDP, fragments of tunnel packets (they cannot be reassembled here), IPv6
extension headers before the tunnel, malformed tunnel packets (the kernel drops them).

The real server then needs, as for direct routing, the VIP on lo and arp_ignore=1 /
arp_announce=2 (IPv4), and, because the inner source is the client and arrives on this
interface: rp_filter loose (2) or off (0) on it and on `all` (the kernel uses the higher).
The program and its maps are pinned under PIN_DIR/decap, so decapsulation goes on after
the command exits.

ECN (RFC 6040, normal mode): an outer header marked CE (congestion experienced) marks an
ECN-capable inner packet CE; an inner packet that is not ECN-capable is then dropped
(drop_ce_not_ect). Every other combination leaves the inner packet as it was.

Counters (`lb-ctl decap`): decap_ipip, decap_ip6, decap_gue (decapsulated, by outer
header); pass_not_tunnel, pass_other_dst (not one of --accept-dst), pass_fragment,
pass_malformed; drop_ce_not_ect (dropped: CE outside, Not-ECT inside).

Typical use:
  lb-ctl decap attach eth0             IPIP, IPv6 and GUE on UDP 6080, any destination
  lb-ctl decap                         where, settings, counters
  lb-ctl decap detach eth0")]
    Decap {
        #[command(subcommand)]
        action: Option<Decap>,
    },
    /// On a real server: put the VIPs on lo and set the ARP sysctls (`up`), undo exactly that
    /// (`down`), or report each setting (`check`).
    #[command(long_about = "\
What LVS-DR guides have people do by hand on each real server, in one command:
  - each VIP on lo: IPv4 as /32, IPv6 as /128 nodad;
  - net.ipv4.conf.{all,IFACE}.arp_ignore=1 and arp_announce=2 for `all` and each interface
    toward the director (--interface, repeatable; default: every interface but lo that is
    up), so the real server never answers ARP for the VIP;
  - with --tunnel ipip|gue: rp_filter loose (2) on `all` and those interfaces, and the
    decapsulation program attached to them (as `lb-ctl decap attach IFACE --gue-port N`).

`up` records every change with the value it found in ROOT/run/lb-ctl/realserver.json before
making it; `down` undoes exactly those changes: a sysctl that already had the wanted value
stays as it was, an address that was already on lo stays. A setting changed again since `up`
is left alone and named. `check` prints each setting as `ok` or
`wrong: FOUND, want X; fix: COMMAND` and exits 1 unless all are ok.

--persist (up) also writes ROOT/etc/sysctl.d/90-lb-realserver.conf and, for the VIPs, an
ifupdown snippet ROOT/etc/network/interfaces.d/lb-realserver when ROOT/etc/network/interfaces
exists, else a systemd-networkd file ROOT/etc/systemd/network/90-lb-realserver-lo.network;
`down --persist` removes them. Decapsulation is not persisted (its pins do not survive a
reboot): run `lb-ctl realserver up --tunnel ...` at boot for that.

Typical use:
  lb-ctl realserver up --vip 192.168.58.133,fd00:58::133 --interface eth0 --persist
  lb-ctl realserver check --vip 192.168.58.133,fd00:58::133 --interface eth0
  lb-ctl realserver down --persist")]
    Realserver {
        #[command(subcommand)]
        action: Realserver,
    },
    /// On a director: check the kernel, the pins, the interfaces, the VIP and every backend;
    /// each line ok or FAIL with a fix.
    #[command(long_about = "\
Check what the director and its real servers need, one line each, `ok ...` or
`FAIL ...; fix: ...`:
  - the kernel version, the bpf filesystem under --pin-dir, BTF (/sys/kernel/btf/vmlinux);
  - each attached interface: its XDP program and mode (native or generic, as the kernel
    reports it), the pinned link and program;
  - each VIP of FILE: held by this director (on which interface) or not, and whether that
    is expected (a VRRP instance's address: this director may be backup; a service with
    `announce:`: ECMP needs no VIP on the director);
  - each direct-routing backend: answers ARP (NDP for IPv6) for its own address; does NOT
    answer ARP for an IPv4 VIP (one ARP request for the VIP out of the interface, and the
    answers within --timeout: a real server that answers steals the VIP's traffic); its
    service port answers a TCP connect, and a handshake with VIP:port sent to its MAC as the
    data path sends clients' packets (the via-VIP check), for TCP services.
Exits 1 when any line is FAIL. --json prints one object per line for machines.")]
    Doctor {
        /// The service file the director runs.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// How long each network check waits for an answer.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
        timeout: Duration,
        /// One JSON object per check: {"check", "ok", "detail", "fix"}.
        #[arg(long)]
        json: bool,
    },
    /// Print the MD5 of a page's body like keepalived's genhash, for a check's `digest`.
    #[command(long_about = "\
Fetch http://SERVER:PORT/URL (https with --ssl; the certificate is not verified; SERVER is an
IPv4 or IPv6 address, e.g. fd00:58::135) the way the http_get and https_get checks do, and
print the MD5 of the body like keepalived's genhash:
  MD5SUM = 9b3a0c...
Put it in the check's `digest:`. With --netns it runs inside that namespace.")]
    Genhash {
        /// The server's address, IPv4 or IPv6.
        #[arg(long, short = 's', value_name = "ADDR")]
        server: std::net::IpAddr,
        /// The server's port.
        #[arg(long, short = 'p', value_name = "N")]
        port: u16,
        /// The path requested.
        #[arg(long, short = 'u', value_name = "PATH")]
        url: String,
        /// Use TLS (https).
        #[arg(long, short = 'S')]
        ssl: bool,
        /// The Host header (default: the server's address, an IPv6 one in brackets).
        #[arg(long, value_name = "H")]
        host: Option<String>,
        /// Give up after this long.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
        timeout: Duration,
        /// Print the response headers too.
        #[arg(long, short = 'v')]
        verbose: bool,
    },
    /// Print a shell completion script for bash, zsh or fish.
    #[command(long_about = "\
Print a completion script for SHELL on stdout, made from the same definitions as --help.

  bash: lb-ctl completions bash > /etc/bash_completion.d/lb-ctl
        (or, for one shell: source <(lb-ctl completions bash))
  zsh:  lb-ctl completions zsh > \"${fpath[1]}/_lb-ctl\"
  fish: lb-ctl completions fish > ~/.config/fish/completions/lb-ctl.fish")]
    Completions {
        /// The shell the script is for.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (lb-ctl.1 and one per subcommand) into a directory.
    #[command(long_about = "\
Write the manual pages, made from the same definitions as --help, into DIR (created if
missing; default: the current directory): lb-ctl.1 for the command and its global options,
and one page per subcommand, named as git names its pages: lb-ctl-run.1, lb-ctl-decap.1,
lb-ctl-decap-attach.1 ... Prints the path of each page written.

  lb-ctl man /usr/local/share/man/man1 && mandb
  man -l lb-ctl-run.1")]
    Man {
        /// Where to write the pages.
        #[arg(value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
    /// Print the service file equivalent to a keepalived.conf.
    #[command(long_about = "\
Read a keepalived.conf (and the files it includes) and print the equivalent service file
(YAML) on standard output, with a comment above each part saying where it came from:

  virtual_server IP PORT
      a service: lb_algo (rr wrr lc wlc sh mh), lb_kind DR (TUN: forward: tunnel),
      protocol TCP|UDP, persistence_timeout and persistence_granularity, sorry_server,
      quorum, hysteresis, inhibit_on_failure, alpha, delay_loop
  virtual_server group NAME
      one service per address of the virtual_server_group
  real_server IP PORT
      a backend: weight, notify_up/notify_down, and its check: HTTP_GET/SSL_GET (url path
      digest status_code, virtualhost), TCP_CHECK, MISC_CHECK (exec), with connect_port,
      connect_timeout, retry/nb_get_retry, delay_before_retry, warmup
  vrrp_instance, vrrp_script, vrrp_sync_group
      vrrp:, vrrp_scripts:, vrrp_sync_groups: (authentication PASS, virtual_ipaddress,
      unicast_peer, nopreempt, preempt_delay, notify_*, track_script, track_interface,
      garp_master_*)

keepalived's defaults are written out where they differ from the service file's
(delay_loop 60 s, connect_timeout 5 s, delay_before_retry 3 s for HTTP). keepalived's
`retry N` (checks after the first failure) is `retries: N+1` (failures in a row).

Every line that is not imported as it is, is named on standard error as
  FILE:LINE: what: not supported: why     the result differs from keepalived's behaviour
  FILE:LINE: what: not needed: why        nothing is lost (global_defs, an ifconfig label)
Refused, for example: lb_kind NAT (imported as direct routing, said so), fwmark services,
schedulers other than the six above (lblc, dh, sed, nq, fo, ovf), auth_type AH, SMTP alerts,
static and virtual routes, `@NAME` conditional lines and `$NAME` variables.

Exit status: 0 the import is complete; 1 some lines are not supported (the file is still
printed; read the list); 2 the file cannot be read as keepalived.conf (nothing printed).

  lb-ctl import /etc/keepalived/keepalived.conf > services.yaml
  lb-ctl apply --dry-run -f services.yaml")]
    Import {
        /// The keepalived.conf to read.
        file: PathBuf,
    },
}

/// What `lb-ctl decap` does.
#[derive(Subcommand)]
pub enum Decap {
    /// Print where decapsulation is attached, its settings and its counters (the default).
    Status,
    /// Attach the decapsulation program to an interface and pin it.
    #[command(long_about = "\
Load the decapsulation program, attach it to IFACE and pin the program, the link and its
maps under PIN_DIR/decap. The settings (--gue-port, --accept-dst) hold for every interface
it is attached to; attaching again (also an interface already attached) writes them anew.")]
    Attach {
        /// The interface tunnel packets arrive on.
        iface: String,
        /// native: in the driver (default); generic: in the kernel's generic path.
        #[arg(long, value_enum, default_value_t = Mode::Native)]
        mode: Mode,
        /// The UDP port of GUE packets (the services' `tunnel.port`); 0 turns GUE off.
        #[arg(long, value_name = "N", default_value_t = lb_common::decap::DEFAULT_GUE_PORT)]
        gue_port: u16,
        /// Decapsulate only packets whose outer destination is ADDR (repeat for more, at
        /// most 64; IPv4 or IPv6), e.g. this server's own address on IFACE. Default: any
        /// outer destination, as an ipip device without a local address.
        #[arg(long = "accept-dst", value_name = "ADDR")]
        accept_dst: Vec<std::net::IpAddr>,
    },
    /// Detach the decapsulation program from an interface; with none left, remove its pins.
    Detach {
        /// An interface given to `decap attach`.
        iface: String,
    },
}

/// What `lb-ctl realserver` does.
#[derive(Subcommand)]
pub enum Realserver {
    /// Put the VIPs on lo and set the sysctls (and decapsulation for --tunnel); record what
    /// changed.
    Up {
        #[command(flatten)]
        want: RealserverWant,
        /// Also write the sysctl.d and networkd (or ifupdown) files that redo it at boot.
        #[arg(long)]
        persist: bool,
        #[command(flatten)]
        root: RealserverRoot,
    },
    /// Undo exactly what `up` changed (as recorded), and with --persist remove its files.
    Down {
        /// Also remove the files `up --persist` wrote.
        #[arg(long)]
        persist: bool,
        #[command(flatten)]
        root: RealserverRoot,
    },
    /// Report each setting as ok, or wrong with the command that fixes it; exit 1 unless all
    /// are ok.
    Check {
        #[command(flatten)]
        want: RealserverWant,
        #[command(flatten)]
        root: RealserverRoot,
    },
}

/// What a real server serves.
#[derive(Args, Clone)]
pub struct RealserverWant {
    /// The VIPs (comma-separated or repeated), IPv4 or IPv6.
    #[arg(
        long = "vip",
        value_name = "VIP[,VIP...]",
        value_delimiter = ',',
        required = true
    )]
    pub vips: Vec<std::net::IpAddr>,
    /// An interface toward the director (repeatable). Default: every interface but lo that
    /// is up.
    #[arg(long = "interface", value_name = "IFACE")]
    pub ifaces: Vec<String>,
    /// Tunnel mode: the director sends IPIP (or GUE and IPIP); adds rp_filter=2 and the
    /// decapsulation program on the interfaces.
    #[arg(long, value_enum, value_name = "ipip|gue")]
    pub tunnel: Option<TunnelArg>,
    /// The UDP port of GUE packets (the services' `tunnel.port`), with --tunnel gue.
    #[arg(long, value_name = "N", default_value_t = lb_common::decap::DEFAULT_GUE_PORT)]
    pub gue_port: u16,
}

/// `--tunnel`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum TunnelArg {
    Ipip,
    Gue,
}

/// Where `lb-ctl realserver` keeps its files.
#[derive(Args, Clone)]
pub struct RealserverRoot {
    /// The directory the state file (run/lb-ctl/realserver.json) and the --persist files
    /// (etc/...) are under.
    #[arg(
        long,
        value_name = "DIR",
        env = "LB_REALSERVER_ROOT",
        default_value = "/"
    )]
    pub root: PathBuf,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}

/// `ADDR:PORT`, or a bare `PORT` for 127.0.0.1:PORT (the `--listen` argument).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        format!(
            "`{s}` is not ADDR:PORT or PORT (e.g. 9100, 127.0.0.1:9100, [::1]:9100, 0.0.0.0:9100)"
        )
    })
}

#[cfg(test)]
mod listen_tests {
    use super::parse_listen;

    #[test]
    fn listen_takes_a_port_or_an_address() {
        assert_eq!(
            parse_listen("9100"),
            Ok("127.0.0.1:9100".parse().unwrap_or_else(|_| unreachable!()))
        );
        assert_eq!(
            parse_listen("0.0.0.0:80"),
            Ok("0.0.0.0:80".parse().unwrap_or_else(|_| unreachable!()))
        );
        assert_eq!(
            parse_listen("[::1]:9100"),
            Ok("[::1]:9100".parse().unwrap_or_else(|_| unreachable!()))
        );
        let e = parse_listen("localhost:9100").err().unwrap_or_default();
        assert!(e.contains("not ADDR:PORT or PORT"), "{e}");
        assert!(parse_listen("70000").is_err());
    }
}
