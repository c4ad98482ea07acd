//! A sync group (keepalived's `vrrp_sync_group`): instances that move together.
//!
//! - A member in fault of its own (its link, a tracked thing of weight 0) puts every other
//!   member in fault ("sync group member X in fault"); when it recovers they start over.
//! - A member leaving master for backup by itself (a better master's advert) sends
//!   [`Msg::Backup`]: the other masters follow.
//! - A member becoming master by itself sends [`Msg::Master`]: the other backups follow.
//! - A member's own timer only makes it *want* master; the last member to want it (all the
//!   others want it or are master already) sends [`Msg::Master`]. So a member whose peer
//!   still advertises keeps the whole group backup: no member flaps alone.
//!
//! Members publish their state ([`Group::update`]) after every step; transitions caused by
//! the group itself are not sent again.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use tokio::sync::broadcast;

use super::state::State;

/// What a member shows the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub state: State,
    /// A backup whose timer ran out, waiting for the group.
    pub wants_master: bool,
    /// In fault of its own (not because of the group).
    pub fault: bool,
}

/// A message to every member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// `from` became master: the others become master too.
    Master { from: String },
    /// `from` left master for backup: the other masters follow.
    Backup { from: String },
    /// A member's fault began or ended: look at the group's faults again.
    Faults,
}

/// One group.
#[derive(Debug)]
pub struct Group {
    pub name: String,
    members: Mutex<BTreeMap<String, Member>>,
    tx: broadcast::Sender<Msg>,
}

impl Group {
    pub fn new(name: &str, instances: &[String]) -> Arc<Group> {
        let start = Member {
            state: State::Initialize,
            wants_master: false,
            fault: false,
        };
        Arc::new(Group {
            name: name.to_string(),
            members: Mutex::new(instances.iter().map(|i| (i.clone(), start)).collect()),
            tx: broadcast::channel(64).0,
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Msg> {
        self.tx.subscribe()
    }

    pub fn send(&self, msg: Msg) {
        // No receiver (every member stopped) is fine.
        let _ = self.tx.send(msg);
    }

    fn members(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `me`'s state; returns what it was.
    pub fn update(&self, me: &str, m: Member) -> Option<Member> {
        self.members().insert(me.to_string(), m)
    }

    /// Another member in fault of its own, if any.
    pub fn fault_of_others(&self, me: &str) -> Option<String> {
        (self.members().iter())
            .find(|(name, m)| name.as_str() != me && m.fault)
            .map(|(name, _)| name.clone())
    }

    /// Whether every other member is master or wants to be.
    pub fn others_ready(&self, me: &str) -> bool {
        (self.members().iter())
            .filter(|(name, _)| name.as_str() != me)
            .all(|(_, m)| m.state == State::Master || m.wants_master)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_and_readiness_are_of_the_others() {
        let g = Group::new("G", &["a".into(), "b".into()]);
        let m = |state, wants_master, fault| Member {
            state,
            wants_master,
            fault,
        };
        g.update("a", m(State::Fault, false, true));
        assert_eq!(g.fault_of_others("b").as_deref(), Some("a"));
        assert_eq!(g.fault_of_others("a"), None);
        g.update("a", m(State::Backup, true, false));
        assert!(g.others_ready("b"));
        assert!(!g.others_ready("a"), "b is still in init");
        g.update("b", m(State::Master, false, false));
        assert!(g.others_ready("a"));
    }
}
