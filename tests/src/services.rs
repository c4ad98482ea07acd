//! Service files for the tests, of either family: `services:` entries as `lb-ctl` reads them
//! (README, "The service file"). Addresses are quoted, so IPv6 ones read as strings.

use std::net::IpAddr;

use crate::lab::Lab;

/// One service of a service file.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    pub scheduler: &'static str,
    /// More lines of the service (a `check:` block, `persistence:`), each indented by 4.
    pub extra: String,
    pub backends: Vec<IpAddr>,
}

impl Service {
    /// A TCP service `name` on `vip:port`, scheduler `rr`, over `backends`.
    pub fn new(name: &str, vip: impl Into<IpAddr>, port: u16, backends: &[IpAddr]) -> Service {
        Service {
            name: name.to_owned(),
            vip: vip.into(),
            port,
            protocol: "tcp",
            scheduler: "rr",
            extra: String::new(),
            backends: backends.to_vec(),
        }
    }

    /// The service's entry of a `services:` list.
    pub fn yaml(&self) -> String {
        let mut y = format!(
            "  - name: {}\n    vip: \"{}\"\n    port: {}\n    protocol: {}\n    scheduler: {}\n{}    \
             backends:\n",
            self.name, self.vip, self.port, self.protocol, self.scheduler, self.extra
        );
        for b in &self.backends {
            y.push_str(&format!("      - address: \"{b}\"\n"));
        }
        y
    }
}

/// A UDP service on `lab`'s VIP of one family (`echo4` on the IPv4 VIP, `echo6` on the IPv6
/// VIP), on the port of the lab's UDP echo servers, over every real server, with `scheduler`.
pub fn udp_echo(lab: &Lab, v6: bool, scheduler: &'static str) -> Service {
    let (name, vip, backends): (_, IpAddr, Vec<IpAddr>) = if v6 {
        let b = lab.servers().iter().map(|s| s.addr6.into()).collect();
        ("echo6", lab.vip6().into(), b)
    } else {
        let b = lab.servers().iter().map(|s| s.addr.into()).collect();
        ("echo4", lab.vip().into(), b)
    };
    let mut s = Service::new(name, vip, lab.spec().udp_port, &backends);
    s.protocol = "udp";
    s.scheduler = scheduler;
    s
}

/// A service file of `services`.
pub fn file(services: &[Service]) -> String {
    let mut y = String::from("services:\n");
    for s in services {
        y.push_str(&s.yaml());
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_are_quoted() {
        let b: IpAddr = "fd00:58::135".parse().unwrap();
        let mut s = Service::new("web6", "fd00:58::133".parse::<IpAddr>().unwrap(), 80, &[b]);
        s.protocol = "udp";
        assert_eq!(
            file(&[s]),
            "services:\n  - name: web6\n    vip: \"fd00:58::133\"\n    port: 80\n    protocol: \
             udp\n    scheduler: rr\n    backends:\n      - address: \"fd00:58::135\"\n"
        );
    }
}
