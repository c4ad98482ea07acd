//! End to end in the namespace lab (see `docs/lab.md`): persistence with a real
//! client, and least connections with long-lived connections. The real `lb-ctl` binary
//! drives director-1 (`cargo build -p lb-ctl` first; `cargo xtask test` does).

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use lb_tests::{
    lab::{self, HttpConn, Lab, LabSpec, http_get},
    lbctl::LbCtl,
};

const T: Duration = Duration::from_secs(2);
const VIP: Ipv4Addr = lab::DEFAULT_VIP;

fn yaml(scheduler: &str, extra: &str) -> String {
    format!(
        "services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    scheduler: {scheduler}\n{extra}    backends:\n      - address: 192.168.58.135\n      - address: 192.168.58.136\n"
    )
}

fn setup(config: &str) -> (Lab, LbCtl) {
    let lab = Lab::build(&LabSpec {
        server_bin: Some(env!("CARGO_BIN_EXE_lab-server").into()),
        ..LabSpec::default()
    })
    .expect("building the lab (needs root)");
    let ctl = LbCtl::new(&lab, lab.director(0)).expect("lb-ctl");
    ctl.attach("eth0").expect("attach");
    ctl.apply(config).expect("apply");
    (lab, ctl)
}

#[test]
fn persistence_sends_one_client_to_one_server() {
    // rr would alternate; persistence holds the client for 50 requests on new connections.
    let (lab, ctl) = setup(&yaml("rr", "    persistence: { timeout: 30s }\n"));
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..50 {
        let (status, body) = http_get(lab.client(), VIP, 80, "/", T)
            .unwrap_or_else(|e| panic!("request {i}: {e:#}"));
        assert_eq!(status, 200, "request {i}");
        *answers.entry(body.trim().to_string()).or_default() += 1;
    }
    assert_eq!(
        answers.len(),
        1,
        "one server answered everything: {answers:?}"
    );
    assert_eq!(answers.values().sum::<usize>(), 50);
    let list = ctl.list().expect("list");
    assert!(list.contains("rr persistent 30"), "{list}");
    assert!(
        list.contains("connection table 50 of 262144 in use"),
        "{list}"
    );
    // Without persistence the same client is spread again.
    ctl.apply(&yaml("rr", ""))
        .expect("apply without persistence");
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..10 {
        let (_, body) = http_get(lab.client(), VIP, 80, "/", T).expect("request");
        *spread.entry(body.trim().to_string()).or_default() += 1;
    }
    assert_eq!(spread.len(), 2, "{spread:?}");
    ctl.detach("eth0").expect("detach");
}

#[test]
fn least_connections_avoid_the_server_holding_long_connections() {
    let (lab, ctl) = setup(&yaml("lc", ""));
    // Three long-lived (keep-alive) connections: lc spreads them 2:1.
    let mut held: Vec<(HttpConn, String)> = (0..3)
        .map(|i| {
            let mut c = HttpConn::connect(lab.client(), VIP, 80, T)
                .unwrap_or_else(|e| panic!("connection {i}: {e:#}"));
            let (_, body) = c.get("/").expect("first request");
            (c, body.trim().to_string())
        })
        .collect();
    let on =
        |name: &str, held: &[(HttpConn, String)]| held.iter().filter(|(_, s)| s == name).count();
    let busy = if on("real-server-1", &held) == 2 {
        "real-server-1"
    } else {
        "real-server-2"
    };
    assert_eq!(on(busy, &held), 2, "lc spreads three connections 2:1");
    // One more long connection goes to the other server (1 < 2) ...
    let mut c = HttpConn::connect(lab.client(), VIP, 80, T).expect("fourth connection");
    let (_, body) = c.get("/").expect("request");
    assert_ne!(body.trim(), busy);
    held.push((c, body.trim().to_string()));
    // ... and now both hold two: ActiveConn in the listing says so.
    let list = ctl.list().expect("list");
    let active: Vec<&str> = list
        .lines()
        .filter(|l| l.trim_start().starts_with("->") && l.contains(" Route "))
        .map(|l| l.split_whitespace().nth(4).unwrap_or("?"))
        .collect();
    assert_eq!(active, vec!["2", "2"], "{list}");
    // The held connections keep working on their servers.
    for (c, server) in held.iter_mut() {
        let (status, body) = c.get("/").expect("request on a held connection");
        assert_eq!((status, body.trim()), (200, server.as_str()));
    }
    drop(held);
    ctl.detach("eth0").expect("detach");
}
