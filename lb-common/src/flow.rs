//! A connection-table entry (`FLOWS` value) and the one rule both sides judge it by: how long
//! it stays live after its last packet, and whether it counts as an active connection.
//!
//! The data path (`known_flow`, `schedule`), the control plane's recount of `CONNS` and its
//! listings all call these functions, so `lb-ctl list` shows exactly the connections the data
//! path keeps and the counts that `lc`/`wlc` compare.

use crate::PROTO_TCP;

const NS_PER_S: u64 = 1_000_000_000;

/// TCP flag bits of the flags byte (offset 13 of the TCP header).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
}

/// TCP state as the director sees it (client-to-server direction only, as in IPVS DR mode).
/// States only move forward, in this order; `None` is every UDP flow's state.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TcpState {
    None = 0,
    Syn = 1,
    Established = 2,
    Fin = 3,
    Rst = 4,
}

impl TcpState {
    pub const ALL: [TcpState; 5] = [
        TcpState::None,
        TcpState::Syn,
        TcpState::Established,
        TcpState::Fin,
        TcpState::Rst,
    ];

    /// The state stored as `Flow::state`, or `None` for a value no data path writes.
    #[inline(always)]
    pub const fn from_u8(v: u8) -> Option<TcpState> {
        match v {
            0 => Some(TcpState::None),
            1 => Some(TcpState::Syn),
            2 => Some(TcpState::Established),
            3 => Some(TcpState::Fin),
            4 => Some(TcpState::Rst),
            _ => None,
        }
    }

    /// The state a packet of `proto` with TCP `flags` signals on its own: RST over FIN over
    /// SYN; any other TCP packet is ESTABLISHED; UDP has no state.
    #[inline(always)]
    pub const fn signalled(proto: u8, flags: u8) -> TcpState {
        if proto != PROTO_TCP {
            TcpState::None
        } else if flags & tcp_flags::RST != 0 {
            TcpState::Rst
        } else if flags & tcp_flags::FIN != 0 {
            TcpState::Fin
        } else if flags & tcp_flags::SYN != 0 {
            TcpState::Syn
        } else {
            TcpState::Established
        }
    }

    /// A flow of `proto` in this state is an active connection: TCP in SYN or ESTABLISHED.
    /// This is what `CONNS` counts, what `lc`/`wlc` compare and what `lb-ctl list` shows as
    /// ActiveConn; every other live entry (FIN, RST, UDP) is an InActConn.
    #[inline(always)]
    pub const fn is_active(self, proto: u8) -> bool {
        proto == PROTO_TCP && matches!(self, TcpState::Syn | TcpState::Established)
    }

    /// Seconds an entry of `proto` in this state stays live after its last packet.
    #[inline(always)]
    pub const fn timeout_s(self, proto: u8) -> u64 {
        if proto != PROTO_TCP {
            return timeouts::UDP_S;
        }
        match self {
            TcpState::Established => timeouts::TCP_ESTABLISHED_S,
            TcpState::Fin => timeouts::TCP_FIN_S,
            TcpState::Rst => timeouts::TCP_CLOSE_S,
            TcpState::None | TcpState::Syn => timeouts::TCP_SYN_S,
        }
    }
}

/// How long a connection-table entry stands for a connection after its last packet, by
/// state: IPVS's defaults (`ipvsadm --set 900 120 300`, SYN_RECV 30 s, CLOSE 10 s). An entry
/// older than this is a new flow again.
pub mod timeouts {
    pub const TCP_SYN_S: u64 = 30;
    pub const TCP_ESTABLISHED_S: u64 = 900;
    pub const TCP_FIN_S: u64 = 120;
    pub const TCP_CLOSE_S: u64 = 10;
    pub const UDP_S: u64 = 300;
}

/// `now_ns - last_seen_ns`, or 0 when the clock reads older than the stamp: another CPU (or
/// the data path, after user space read the clock) stamped it later, so it was just seen.
#[inline(always)]
pub const fn age_ns(now_ns: u64, last_seen_ns: u64) -> u64 {
    now_ns.saturating_sub(last_seen_ns)
}

/// Value of `FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// `bpf_ktime_get_coarse_ns()` of the last packet.
    pub last_seen_ns: u64,
    pub backend: u32,
    pub service_id: u32,
    /// A [`TcpState`] as a byte: the kernel writes it, so it stays a plain integer here (an
    /// out-of-range byte in an enum field would be undefined behaviour); read it with
    /// [`Flow::state`].
    pub state: u8,
    pub _pad: [u8; 7],
}

impl Flow {
    /// The entry's state; a byte no data path writes reads as `TcpState::None`.
    #[inline(always)]
    pub const fn state(&self) -> TcpState {
        match TcpState::from_u8(self.state) {
            Some(s) => s,
            None => TcpState::None,
        }
    }

    /// Nanoseconds the entry of a `proto` flow stays live after `now_ns`, or `None` once it
    /// has expired. Live means: no older than its state's timeout (exactly at the timeout is
    /// still live); a clock older than the entry's stamp is age 0.
    #[inline(always)]
    pub const fn remaining_ns(&self, proto: u8, now_ns: u64) -> Option<u64> {
        let timeout_ns = self.state().timeout_s(proto) * NS_PER_S;
        timeout_ns.checked_sub(age_ns(now_ns, self.last_seen_ns))
    }

    /// The entry still stands for a connection at `now_ns` (see [`Flow::remaining_ns`]).
    #[inline(always)]
    pub const fn is_live(&self, proto: u8, now_ns: u64) -> bool {
        self.remaining_ns(proto, now_ns).is_some()
    }

    /// The entry is an active connection if it is live (see [`TcpState::is_active`]).
    #[inline(always)]
    pub const fn is_active(&self, proto: u8) -> bool {
        self.state().is_active(proto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROTO_UDP;

    const S: u64 = NS_PER_S;
    /// A plausible monotonic clock reading (a day of uptime).
    const NOW: u64 = 86_400 * S;

    fn flow(state: TcpState, age_ns: u64) -> Flow {
        Flow {
            last_seen_ns: NOW - age_ns,
            state: state as u8,
            ..Flow::default()
        }
    }

    #[test]
    fn timeouts_follow_ipvs() {
        let tcp = |s: TcpState| s.timeout_s(PROTO_TCP);
        assert_eq!(tcp(TcpState::Established), 900);
        assert_eq!(tcp(TcpState::Fin), 120);
        assert_eq!(tcp(TcpState::Rst), 10);
        assert_eq!(tcp(TcpState::Syn), 30);
        assert_eq!(tcp(TcpState::None), 30);
        for s in TcpState::ALL {
            assert_eq!(s.timeout_s(PROTO_UDP), 300, "{s:?}");
        }
    }

    #[test]
    fn live_up_to_and_at_the_timeout_expired_one_ns_later() {
        for proto in [PROTO_TCP, PROTO_UDP] {
            for state in TcpState::ALL {
                let t = state.timeout_s(proto) * S;
                let at = flow(state, t);
                assert!(at.is_live(proto, NOW), "{proto} {state:?} at the timeout");
                assert_eq!(at.remaining_ns(proto, NOW), Some(0));
                let fresh = flow(state, 0);
                assert_eq!(fresh.remaining_ns(proto, NOW), Some(t), "{state:?}");
                let over = flow(state, t + 1);
                assert!(!over.is_live(proto, NOW), "{proto} {state:?} 1 ns over");
                assert_eq!(over.remaining_ns(proto, NOW), None);
            }
        }
    }

    #[test]
    fn a_clock_older_than_last_seen_is_age_zero_not_ancient() {
        // Stamped 1 s "in the future" (another CPU, or after user space read its clock).
        let f = Flow {
            last_seen_ns: NOW + S,
            state: TcpState::Established as u8,
            ..Flow::default()
        };
        assert_eq!(age_ns(NOW, f.last_seen_ns), 0);
        assert!(f.is_live(PROTO_TCP, NOW));
        assert_eq!(f.remaining_ns(PROTO_TCP, NOW), Some(900 * S));
        // Even the largest stamp: a wrapping difference would call it expired.
        let f = Flow {
            last_seen_ns: u64::MAX,
            ..f
        };
        assert!(f.is_live(PROTO_TCP, 0));
    }

    #[test]
    fn only_tcp_syn_and_established_are_active() {
        let active: [(TcpState, bool); 5] = [
            (TcpState::None, false),
            (TcpState::Syn, true),
            (TcpState::Established, true),
            (TcpState::Fin, false),
            (TcpState::Rst, false),
        ];
        for (state, want) in active {
            assert_eq!(state.is_active(PROTO_TCP), want, "{state:?}");
            assert_eq!(flow(state, 0).is_active(PROTO_TCP), want, "{state:?}");
            assert!(!state.is_active(PROTO_UDP), "UDP {state:?}");
        }
    }

    #[test]
    fn states_round_trip_and_order_forward() {
        for (i, s) in TcpState::ALL.iter().enumerate() {
            assert_eq!(*s as u8, i as u8);
            assert_eq!(TcpState::from_u8(i as u8), Some(*s));
        }
        assert_eq!(TcpState::from_u8(5), None);
        let bad = Flow {
            state: 200,
            ..Flow::default()
        };
        assert_eq!(bad.state(), TcpState::None);
        assert!(TcpState::Syn < TcpState::Established && TcpState::Fin < TcpState::Rst);
    }

    #[test]
    fn flags_signal_rst_over_fin_over_syn() {
        use tcp_flags::{FIN, RST, SYN};
        const ACK: u8 = 0x10;
        let tcp = |f| TcpState::signalled(PROTO_TCP, f);
        assert_eq!(tcp(SYN), TcpState::Syn);
        assert_eq!(tcp(ACK), TcpState::Established);
        assert_eq!(tcp(FIN | ACK), TcpState::Fin);
        assert_eq!(tcp(RST | ACK), TcpState::Rst);
        assert_eq!(tcp(SYN | FIN | RST), TcpState::Rst);
        assert_eq!(tcp(SYN | FIN), TcpState::Fin);
        assert_eq!(TcpState::signalled(PROTO_UDP, SYN), TcpState::None);
    }
}
