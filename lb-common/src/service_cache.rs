//! The per-CPU service cache (`SERVICE_CACHE`): a direct-mapped array in front of `SERVICES`,
//! so that a new flow finds its service with inlined array reads and no hash-map call (the
//! call, its hash and its bucket walk were a fifth of a new flow's cost).
//!
//! A slot holds the key a packet looked up (its VIP, port and protocol) and a copy of the
//! service `SERVICES` gave for it (its own, or its VIP's all-ports service); it is trusted
//! only while its key is the packet's and its `generation` is the current one
//! (`GENERATION[0]`, read before `SERVICES`): user space bumps it after every write of a plan,
//! and every write of `SERVICES` is one. A packet that finds no service fills nothing.

use crate::{FlowKey, Service, ServiceKey, limits};

/// A slot of `SERVICE_CACHE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedService {
    pub key: ServiceKey,
    /// `GENERATION[0]` when the slot was filled (read before `SERVICES`).
    pub generation: u32,
    /// 1 once filled: an empty slot's zeroed key and generation match nothing.
    pub filled: u32,
    pub service: Service,
}

const _: () = assert!(core::mem::size_of::<CachedService>() == 96);

impl CachedService {
    /// Whether the slot holds `key`'s service, filled in `generation`: five word compares
    /// and one branch.
    #[inline(always)]
    pub fn holds(&self, key: &ServiceKey, generation: u32) -> bool {
        let (a, b) = (self.key.words(), key.words());
        let differ = (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]);
        differ | (self.generation ^ generation) == 0 && self.filled != 0
    }
}

impl ServiceKey {
    /// The key's 20 bytes as five 32-bit words (the padding is always zero).
    #[inline(always)]
    pub fn words(&self) -> &[u32; 5] {
        // Same size, and `ServiceKey` is aligned to 4 with every byte initialised.
        unsafe { &*(self as *const ServiceKey as *const [u32; 5]) }
    }
}

/// The lookup key of `SERVICES` (and of the cache) for a flow: its VIP, port and protocol.
#[inline(always)]
pub const fn service_key(f: &FlowKey) -> ServiceKey {
    ServiceKey {
        addr: f.dst,
        port: f.dport,
        proto: f.proto,
        _pad: 0,
    }
}

/// The slot of `SERVICE_CACHE` a key uses: the address words folded with XOR, the port and
/// protocol beside them, through MurmurHash3's finaliser. A collision only costs the lookup.
#[inline(always)]
pub const fn service_cache_slot(k: &ServiceKey) -> u32 {
    let a = k.addr[0] ^ k.addr[1] ^ k.addr[2] ^ k.addr[3];
    let h = crate::hash_finish(a ^ (k.port as u32) << 8 ^ k.proto as u32, 0);
    h >> (32 - limits::SERVICE_CACHE_BITS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v4_mapped;

    #[test]
    fn the_services_of_one_vip_and_of_many_vips_spread_over_the_slots() {
        let mut used = [false; limits::SERVICE_CACHE_SLOTS as usize];
        let mut n = 0;
        // 64 VIPs of one /24, 8 ports each: 512 services in 1,024 slots.
        for host in 0..64u32 {
            for port in [80u16, 443, 53, 8080, 25, 22, 993, 3306] {
                let key = ServiceKey {
                    addr: v4_mapped((0xc0a8_8500 | host).to_be()),
                    port: port.to_be(),
                    proto: crate::PROTO_TCP,
                    _pad: 0,
                };
                let s = service_cache_slot(&key);
                assert!(s < limits::SERVICE_CACHE_SLOTS);
                if !used[s as usize] {
                    used[s as usize] = true;
                    n += 1;
                }
            }
        }
        // Random keys would use about 1024 * (1 - e^-0.5) = 403 slots.
        assert!(n > 370, "{n}");
    }

    #[test]
    fn a_flows_key_is_its_vip_port_and_protocol() {
        let f = FlowKey {
            src: v4_mapped(0x0a00_0001u32.to_be()),
            dst: v4_mapped(0xc0a8_8585u32.to_be()),
            sport: 40000u16.to_be(),
            dport: 443u16.to_be(),
            proto: crate::PROTO_UDP,
            _pad: [0; 3],
        };
        let k = service_key(&f);
        assert_eq!((k.addr, k.port, k.proto), (f.dst, f.dport, f.proto));
        assert!(crate::serves(&k, &f));
    }

    #[test]
    fn a_slot_holds_its_key_of_its_generation_once_filled() {
        let key = |port: u16| ServiceKey {
            addr: v4_mapped(0xc0a8_8585u32.to_be()),
            port: port.to_be(),
            proto: crate::PROTO_TCP,
            _pad: 0,
        };
        let slot = CachedService {
            key: key(80),
            generation: 7,
            filled: 1,
            service: Service {
                id: 3,
                table_len: 1,
                ..Service::default()
            },
        };
        assert!(slot.holds(&key(80), 7));
        assert!(!slot.holds(&key(81), 7), "another port");
        assert!(!slot.holds(&key(80), 8), "another generation");
        let udp = ServiceKey {
            proto: crate::PROTO_UDP,
            ..key(80)
        };
        assert!(!slot.holds(&udp, 7), "another protocol");
        let empty = CachedService {
            key: ServiceKey::default(),
            generation: 0,
            filled: 0,
            ..slot
        };
        assert!(!empty.holds(&ServiceKey::default(), 0), "an empty slot");
    }
}
