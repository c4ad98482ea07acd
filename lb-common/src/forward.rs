//! How the data path sends a packet to its backend (`Backend::forward`), as IPVS's forwarding
//! methods: direct routing (`ipvsadm -g`) or a tunnel (`ipvsadm -i`), chosen per backend.

/// A backend's forwarding method, stored as a byte in `Backend::forward` (read it with
/// [`Forward::from_u8`], so a byte no `lb-ctl` writes is never an enum value).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Direct routing: only the MACs change; the backend is on the director's segment.
    Route = 0,
    /// IP in IP: the packet inside an outer IPv4 (protocol 4 for IPv4 inside, 41 for IPv6
    /// inside) or IPv6 header, by the family of the backend's address.
    Ipip = 1,
    /// Generic UDP Encapsulation: an outer IP and UDP header to `Backend::tunnel_port`.
    Gue = 2,
}

impl Forward {
    #[inline(always)]
    pub const fn from_u8(v: u8) -> Option<Forward> {
        match v {
            0 => Some(Forward::Route),
            1 => Some(Forward::Ipip),
            2 => Some(Forward::Gue),
            _ => None,
        }
    }

    /// Its name in `stats`: the JSON `forward` field and the Prometheus `forward` label.
    pub const fn name(self) -> &'static str {
        match self {
            Forward::Route => "route",
            Forward::Ipip => "ipip",
            Forward::Gue => "gue",
        }
    }

    /// The name `lb-ctl list` shows in the Forward column, as ipvsadm does.
    pub const fn listed(self) -> &'static str {
        match self {
            Forward::Route => "Route",
            Forward::Ipip | Forward::Gue => "Tunnel",
        }
    }
}
