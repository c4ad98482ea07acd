//! How a service picks the backend of a new flow: the scheduler the file names ([`Sched`],
//! kept for listings) and the method the data path runs for it ([`Pick`]).
//!
//! Both are stored as bytes in `Service` (`sched`, `pick`): user space writes them, and the
//! data path reads `pick` through [`Pick::from_u8`], so a byte no `lb-ctl` writes is never an
//! enum value.

/// How the data path picks a slot of a service's table for a new flow.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Walk the table with the service's shared cursor (rr, wrr).
    Cursor = 0,
    /// Index the table by a hash of the flow's 5-tuple (consistent hashing: mh).
    FlowHash = 1,
    /// Index the table by a hash of the client's address (sh).
    SourceHash = 2,
    /// The backend in the table with the fewest active connections (lc); at most
    /// `limits::LC_MAX_BACKENDS` are compared.
    LeastConn = 3,
    /// As `LeastConn`, per unit of weight (wlc).
    WeightedLeastConn = 4,
}

impl Pick {
    #[inline(always)]
    pub const fn from_u8(v: u8) -> Option<Pick> {
        match v {
            0 => Some(Pick::Cursor),
            1 => Some(Pick::FlowHash),
            2 => Some(Pick::SourceHash),
            3 => Some(Pick::LeastConn),
            4 => Some(Pick::WeightedLeastConn),
            _ => None,
        }
    }
}

/// The scheduler of a service, as stored for `lb-ctl list`; the data path reads only its
/// [`Sched::pick`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sched {
    Rr = 0,
    Wrr = 1,
    Sh = 2,
    Mh = 3,
    Lc = 4,
    Wlc = 5,
}

impl Sched {
    pub const ALL: [Sched; 6] = [
        Sched::Rr,
        Sched::Wrr,
        Sched::Sh,
        Sched::Mh,
        Sched::Lc,
        Sched::Wlc,
    ];

    pub const fn from_u8(v: u8) -> Option<Sched> {
        match v {
            0 => Some(Sched::Rr),
            1 => Some(Sched::Wrr),
            2 => Some(Sched::Sh),
            3 => Some(Sched::Mh),
            4 => Some(Sched::Lc),
            5 => Some(Sched::Wlc),
            _ => None,
        }
    }

    /// What the data path runs for this scheduler.
    pub const fn pick(self) -> Pick {
        match self {
            Sched::Rr | Sched::Wrr => Pick::Cursor,
            Sched::Sh => Pick::SourceHash,
            Sched::Mh => Pick::FlowHash,
            Sched::Lc => Pick::LeastConn,
            Sched::Wlc => Pick::WeightedLeastConn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_unknown_bytes_are_none() {
        for (i, s) in Sched::ALL.iter().enumerate() {
            assert_eq!(*s as u8, i as u8);
            assert_eq!(Sched::from_u8(i as u8), Some(*s));
            let p = s.pick();
            assert_eq!(Pick::from_u8(p as u8), Some(p));
        }
        assert_eq!(Sched::from_u8(6), None);
        assert_eq!(Pick::from_u8(5), None);
        assert_eq!(Pick::from_u8(u8::MAX), None);
    }

    #[test]
    fn schedulers_run_their_pick() {
        assert_eq!(Sched::Rr.pick(), Pick::Cursor);
        assert_eq!(Sched::Wrr.pick(), Pick::Cursor);
        assert_eq!(Sched::Sh.pick(), Pick::SourceHash);
        assert_eq!(Sched::Mh.pick(), Pick::FlowHash);
        assert_eq!(Sched::Lc.pick(), Pick::LeastConn);
        assert_eq!(Sched::Wlc.pick(), Pick::WeightedLeastConn);
    }
}
