//! IPv6 services written into the maps directly, as `apply` would write them, for the packet
//! tests of the IPv6 data path. The tables come from the same builders `apply` uses
//! (`lb_ctl::sched`), the scheduler bytes from `lb_ctl::plan::convert::sched_id`.

use std::net::{IpAddr, Ipv6Addr};

use lb_common::{
    Addr, BACKEND_CONFIGURED, BACKEND_USABLE, Backend, Service, ServiceKey, v4_mapped,
};
use lb_ctl::{
    config::Scheduler,
    plan::convert::{name_bytes, sched_id},
    sched::{maglev, table},
};

use super::{BACKEND_MACS, Harness};

/// First ids and table slot of the hand-written services: far from what `apply` allocates
/// (from 0), so the two kinds can share one harness.
const FIRST_SERVICE: u32 = 3000;
const FIRST_BACKEND: u32 = 50_000;
const FIRST_SLOT: u32 = 1 << 17;
/// Slots of each hand-written service's table region (mh, sh: a table size below this).
const REGION: u32 = 8192;

/// An IPv6 service as a test wants it.
pub struct Service6<'a> {
    pub name: &'a str,
    pub vip: Ipv6Addr,
    /// 0 = every port.
    pub port: u16,
    pub proto: u8,
    pub scheduler: Scheduler,
    /// Maglev table size for mh and sh (a prime).
    pub table_size: u32,
    /// (address, weight); fd00:58::135 to ::138 have [`BACKEND_MACS`], others are
    /// unresolved (configured, not usable).
    pub backends: &'a [(Ipv6Addr, u32)],
    /// Persistence: (timeout in seconds, client prefix length).
    pub persistence: Option<(u32, u8)>,
}

/// The map form of an address: 16 bytes as four words; IPv4 is IPv4-mapped.
pub fn addr_words(a: IpAddr) -> Addr {
    match a {
        IpAddr::V4(v4) => v4_mapped(u32::from_ne_bytes(v4.octets())),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [w(0), w(4), w(8), w(12)]
        }
    }
}

/// The mask of an IPv6 prefix of `len` bits, as four words in network byte order.
pub fn prefix_mask(len: u8) -> Addr {
    let bits = u128::MAX.checked_shl(128 - len as u32).unwrap_or(0);
    addr_words(IpAddr::V6(Ipv6Addr::from(bits)))
}

/// The MAC of a test backend fd00:58::135 to ::138, by its last group.
fn mac_of(a: Ipv6Addr) -> Option<[u8; 6]> {
    let last = a.segments()[7];
    let i = last.checked_sub(0x135)? as usize;
    BACKEND_MACS.get(i).copied()
}

impl Harness {
    /// Writes `s` into SERVICES, BACKENDS, TABLE and CURSORS (counters zeroed), as the
    /// `index`th hand-written service (0, 1, ...; each gets its own ids and table region).
    pub fn set_service6(&mut self, index: u32, s: &Service6) {
        assert!(index < 16, "at most 16 hand-written services");
        let id = FIRST_SERVICE + index;
        let first_backend = FIRST_BACKEND + index * 64;
        let region = FIRST_SLOT + index * REGION;
        assert!(s.backends.len() <= 64, "at most 64 backends a service");
        let maps = self.maps();
        let port = s.port.to_be();
        let mut members = Vec::new();
        for (i, (addr, weight)) in s.backends.iter().enumerate() {
            let bid = first_backend + i as u32;
            let mac = mac_of(*addr);
            let b = Backend {
                addr: addr_words(IpAddr::V6(*addr)),
                mac: mac.unwrap_or([0; 6]),
                flags: BACKEND_CONFIGURED | if mac.is_some() { BACKEND_USABLE } else { 0 },
                service_id: id,
                weight: *weight,
                port,
                _pad: [0; 2],
            };
            maps.backends.set(bid, b, 0).expect("writing BACKENDS");
            maps.reset_backend_counters(bid)
                .expect("zeroing backend counters");
            if mac.is_some() {
                members.push((bid, *weight, format!("[{addr}]:{}", s.port)));
            }
        }
        let weighted: Vec<(u32, u32)> = members.iter().map(|(b, w, _)| (*b, *w)).collect();
        let seq = match s.scheduler {
            Scheduler::Rr | Scheduler::Lc | Scheduler::Wlc => table::round_robin(&weighted),
            Scheduler::Wrr => table::weighted_round_robin(&weighted),
            Scheduler::Sh | Scheduler::Mh => {
                let m: Vec<maglev::Member> = members
                    .iter()
                    .map(|(id, weight, name)| maglev::Member {
                        id: *id,
                        weight: *weight,
                        name,
                    })
                    .collect();
                maglev::build(&m, s.table_size)
            }
        };
        assert!(seq.len() <= REGION as usize, "table of {} slots", seq.len());
        for (i, b) in seq.iter().enumerate() {
            maps.table
                .set(region + i as u32, *b, 0)
                .expect("writing TABLE");
        }
        maps.cursors.set(id, 0, 0).expect("zeroing the cursor");
        maps.reset_service_counters(id)
            .expect("zeroing service counters");
        let (sched, pick) = sched_id(s.scheduler);
        let (persist_timeout_s, persist_mask) = match s.persistence {
            Some((t, len)) => (t, prefix_mask(len)),
            None => (0, [0; 4]),
        };
        let key = ServiceKey {
            addr: addr_words(IpAddr::V6(s.vip)),
            port,
            proto: s.proto,
            _pad: 0,
        };
        let value = Service {
            id,
            table_offset: region,
            table_len: seq.len() as u32,
            pick,
            sched,
            flags: 0,
            persist_timeout_s,
            persist_mask,
            name: name_bytes(s.name),
        };
        maps.services
            .insert(key, value, 0)
            .expect("writing SERVICES");
    }

    /// Marks a hand-written backend unusable (health checks took it down), or usable again.
    pub fn set_backend6_usable(&mut self, addr: Ipv6Addr, usable: bool) {
        let want = addr_words(IpAddr::V6(addr));
        let maps = self.maps();
        let slots = maps.backend_slots().expect("reading BACKENDS");
        let mut found = false;
        for (id, mut b) in slots.into_iter().enumerate() {
            if b.addr == want && b.flags & BACKEND_CONFIGURED != 0 {
                b.flags = if usable {
                    b.flags | BACKEND_USABLE
                } else {
                    b.flags & !BACKEND_USABLE
                };
                maps.backends
                    .set(id as u32, b, 0)
                    .expect("writing BACKENDS");
                found = true;
            }
        }
        assert!(found, "no backend {addr}");
    }
}
