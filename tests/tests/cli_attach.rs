//! `lb-ctl attach` and `detach`: native and generic mode, what is pinned, attaching twice, a
//! second interface sharing the maps, failed attaches leaving nothing behind, and detach
//! removing the link, the pins, the program and its maps (seen with `bpftool`); `--flows
//! 1048576` making a connection table of that size, and what it takes in memory.
//!
//! Each test builds its own lab with [`CliLab`]
//! (`lb_tests::cli`: the seed topology without servers, director-1 `.134` with the VIP `.133`;
//! `docs/lab.md` has the rules kept here) and runs the real binary (`cargo build -p lb-ctl`
//! first; `cargo xtask test` does) with `--netns <director-1> --pin-dir /sys/fs/bpf/<lab
//! prefix>`. Dropping the lab detaches, removes the pins and deletes the namespaces, also when
//! a test fails. Without root, BPF or namespaces the tests fail saying what is missing.
//! There is no traffic.

use lb_common::names;
use lb_tests::cli::{
    CliLab, SERVICES_V1, bpf_object_exists, bpf_object_goes_away, bpftool, link_words, list_rows,
    xdp_prog_id,
};
use serde_json::Value;

const DIRECTOR_MAC: &str = "02:00:00:00:00:86";

#[test]
fn attach_native_pins_everything_and_twice_is_a_no_op() {
    let net = CliLab::new();
    let dir = net.pin_dir();

    // Before attach, commands that need the maps say what to do.
    let out = net.ctl(&["list"]).fails();
    assert!(
        out.stderr.contains(&format!(
            "nothing is attached: no maps are pinned under {dir}"
        )),
        "{out}"
    );
    assert!(xdp_prog_id(&net.director_link()).is_none());

    let out = net.ctl(&["attach", "eth0"]).ok();
    assert_eq!(
        out.stdout,
        format!("attached to eth0 in native mode; pinned under {dir}\n"),
        "{out}"
    );
    for name in names::MAPS
        .iter()
        .copied()
        .chain([names::PROGRAM, "link-eth0"])
    {
        assert!(
            net.pins().join(name).exists(),
            "{name} is not pinned under {dir}"
        );
    }

    // Native (driver) mode: `xdp`, not `xdpgeneric`, and lb-ctl's program.
    let link = net.director_link();
    assert!(
        link.contains(&format!("link/ether {DIRECTOR_MAC} ")),
        "{link}"
    );
    assert!(
        link_words(&link).contains(&"xdp"),
        "not native XDP:\n{link}"
    );
    let id = xdp_prog_id(&link).unwrap_or_else(|| panic!("no XDP program on eth0:\n{link}"));
    let out = bpftool(&["-j", "prog", "show", "id", &id.to_string()]);
    assert!(out.status.success(), "{out}");
    let prog: Value = serde_json::from_str(&out.stdout).expect("bpftool -j prog show");
    assert_eq!(prog["name"], names::PROGRAM, "{prog:#}");
    assert_eq!(prog["type"], "xdp", "{prog:#}");

    // Attaching again changes nothing.
    let out = net.ctl(&["attach", "eth0"]).ok();
    assert_eq!(
        out.stdout,
        format!(
            "eth0 is already attached (pinned under {dir}); nothing to do \
             (to change its mode, detach it first)\n"
        ),
        "{out}"
    );
    assert_eq!(xdp_prog_id(&net.director_link()), Some(id));

    // No services yet.
    let list = net.list();
    assert!(
        list.starts_with(
            "XDP director (lb-ctl): 0 service(s), attached to eth0; connection table 0 of 262144 in use, half-open 0 of 262144\n"
        ),
        "{list}"
    );
    assert_eq!(list_rows(&list), Vec::<String>::new(), "{list}");
    let stats = net.stats_json();
    assert_eq!(stats["services"], Value::Array(Vec::new()), "{stats:#}");
}

#[test]
fn detach_after_apply_removes_the_link_the_pins_and_the_program() {
    let net = CliLab::new();
    let dir = net.pin_dir();
    let id = net.attach();
    net.apply("services.yaml", SERVICES_V1).ok();
    let out = bpftool(&["-j", "prog", "show", "id", &id.to_string()]);
    assert!(out.status.success(), "{out}");
    let prog: Value = serde_json::from_str(&out.stdout).expect("bpftool -j prog show");
    let map_ids: Vec<u64> = prog["map_ids"]
        .as_array()
        .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    assert!(!map_ids.is_empty(), "{prog:#}");

    let out = net.ctl(&["detach", "eth0"]).ok();
    assert_eq!(
        out.stdout,
        format!("detached from eth0; no interface left, removed the pins under {dir}\n"),
        "{out}"
    );
    let link = net.director_link();
    assert!(
        !link_words(&link).iter().any(|w| w.starts_with("xdp")) && xdp_prog_id(&link).is_none(),
        "XDP still attached:\n{link}"
    );
    assert!(!net.pins().exists(), "{dir} is still there");
    assert!(
        bpf_object_goes_away("prog", id),
        "program {id} still loaded after detach"
    );
    for m in map_ids {
        assert!(
            bpf_object_goes_away("map", m),
            "map {m} still exists after detach"
        );
    }

    // Detaching again: a clear error.
    let out = net.ctl(&["detach", "eth0"]).fails();
    assert_eq!(
        out.stderr,
        format!("lb-ctl: eth0 is not attached under {dir} (nothing is attached)\n"),
        "{out}"
    );
    let out = net.ctl(&["list"]).fails();
    assert!(out.stderr.contains("nothing is attached"), "{out}");
}

#[test]
fn attach_then_detach_twice_leaves_no_program() {
    let net = CliLab::new();
    let dir = net.pin_dir();
    let mut ids = Vec::new();
    for round in 0..2 {
        let id = net.attach();
        assert!(bpf_object_exists("prog", id));
        assert!(
            !ids.contains(&id),
            "round {round}: the old program {id} again"
        );
        let out = net.ctl(&["detach", "eth0"]).ok();
        assert!(out.stdout.starts_with("detached from eth0;"), "{out}");
        assert!(
            xdp_prog_id(&net.director_link()).is_none(),
            "round {round}: XDP still attached"
        );
        assert!(!net.pins().exists(), "round {round}: {dir} is still there");
        assert!(
            bpf_object_goes_away("prog", id),
            "round {round}: program {id} still loaded after detach"
        );
        ids.push(id);
    }
}

#[test]
fn a_second_interface_shares_the_maps() {
    let net = CliLab::new();
    let dir = net.pin_dir();
    net.add_director_port("eth1", [2, 0, 0, 0, 2, 0x86], "sw-d2");
    let first = net.attach();
    net.apply("services.yaml", SERVICES_V1).ok();
    let rows = list_rows(&net.list());

    let out = net.ctl(&["attach", "eth1"]).ok();
    assert_eq!(
        out.stdout,
        format!("attached to eth1 in native mode; pinned under {dir}\n"),
        "{out}"
    );
    let link1 = net.link("eth1");
    let second = xdp_prog_id(&link1).unwrap_or_else(|| panic!("no XDP on eth1:\n{link1}"));
    assert_ne!(
        first, second,
        "each interface gets its own program instance"
    );
    assert_eq!(xdp_prog_id(&net.director_link()), Some(first));
    assert!(net.pins().join("link-eth1").exists());
    let list = net.list();
    assert!(
        list.starts_with("XDP director (lb-ctl): 3 service(s), attached to eth0, eth1; "),
        "{list}"
    );
    assert_eq!(list_rows(&list), rows, "the services are shared");

    // Detaching one keeps the other, the maps and the services.
    let out = net.ctl(&["detach", "eth0"]).ok();
    assert_eq!(out.stdout, "detached from eth0\n", "{out}");
    assert!(xdp_prog_id(&net.director_link()).is_none());
    assert_eq!(xdp_prog_id(&net.link("eth1")), Some(second));
    assert!(!net.pins().join("link-eth0").exists());
    for name in [names::SERVICES, names::PROGRAM, "link-eth1"] {
        assert!(net.pins().join(name).exists(), "{name} was unpinned");
    }
    let list = net.list();
    assert!(
        list.starts_with("XDP director (lb-ctl): 3 service(s), attached to eth1; "),
        "{list}"
    );
    assert_eq!(list_rows(&list), rows);

    let out = net.ctl(&["detach", "eth1"]).ok();
    assert_eq!(
        out.stdout,
        format!("detached from eth1; no interface left, removed the pins under {dir}\n"),
        "{out}"
    );
    assert!(!net.pins().exists(), "{dir} is still there");
    for id in [first, second] {
        assert!(
            bpf_object_goes_away("prog", id),
            "program {id} still loaded after the last detach"
        );
    }
}

#[test]
fn failed_attach_leaves_nothing_and_generic_mode_works() {
    let net = CliLab::new();
    let dir = net.pin_dir();

    let out = net.ctl(&["attach", "nosuch0"]).fails();
    assert_eq!(
        out.stderr, "lb-ctl: no interface nosuch0 in this network namespace\n",
        "{out}"
    );
    assert!(!net.pins().exists(), "{dir} made by a failed attach");

    // The half-open table is buckets of four slots: its size is a power of two, at least 4.
    for bad in ["1000", "2"] {
        let out = net.ctl(&["attach", "eth0", "--syn-flows", bad]).fails();
        assert!(
            out.stderr.contains(&format!(
                "the half-open table's size must be a power of two of at least 4 \
                 (--syn-flows {bad}); try "
            )),
            "{out}"
        );
        assert!(!net.pins().exists(), "{dir} made by a failed attach");
    }

    // A bridge has a MAC but no native XDP: the error says what to try.
    net.director_ip(&["link add brx type bridge", "link set brx up"]);
    let out = net.ctl(&["attach", "brx"]).fails();
    assert!(
        out.stderr
            .starts_with("lb-ctl: attaching to brx in native mode failed "),
        "{out}"
    );
    assert!(
        out.stderr.contains("Operation not supported"),
        "the kernel's reason is kept: {out}"
    );
    assert!(
        out.stderr
            .contains("try `lb-ctl attach brx --mode generic`"),
        "{out}"
    );
    assert!(!net.pins().exists(), "{dir} left by a failed first attach");

    let out = net.ctl(&["attach", "eth0", "--mode", "generic"]).ok();
    assert_eq!(
        out.stdout,
        format!("attached to eth0 in generic mode; pinned under {dir}\n"),
        "{out}"
    );
    let link = net.director_link();
    assert!(link_words(&link).contains(&"xdpgeneric"), "{link}");
    let id = xdp_prog_id(&link).unwrap_or_else(|| panic!("no XDP on eth0:\n{link}"));
    net.ctl(&["detach", "eth0"]).ok();
    assert!(xdp_prog_id(&net.director_link()).is_none());
    assert!(!net.pins().exists(), "{dir} is still there");
    assert!(
        bpf_object_goes_away("prog", id),
        "program {id} still loaded"
    );
}

/// Maps pinned by another version (here the persistence table as it was before it became an
/// array: an LRU hash map of 16-byte values) are refused by name before anything is loaded,
/// with what to do; the pins are left for that version's detach.
#[test]
fn attach_refuses_maps_pinned_by_another_version() {
    let net = CliLab::new();
    let dir = net.pin_dir();
    std::fs::create_dir_all(net.pins()).expect("making the pin directory");
    for (name, kind, key, value, entries) in [
        ("SERVICES", "hash", 20, 68, 4096),
        ("PERSIST", "lru_hash", 20, 16, 65536),
    ] {
        let path = format!("{dir}/{name}");
        let (key, value, entries) = (key.to_string(), value.to_string(), entries.to_string());
        let made = std::process::Command::new("bpftool")
            .args([
                "map", "create", &path, "type", kind, "key", &key, "value", &value,
            ])
            .args(["entries", &entries, "name", name])
            .status()
            .expect("running bpftool");
        assert!(made.success(), "bpftool map create {path}");
    }
    let out = net.ctl(&["attach", "eth0"]).fails();
    assert!(
        out.stderr.contains(&format!(
            "lb-ctl: the maps pinned under {dir} were made by another version of lb-ctl: \
             PERSIST is an LRU hash map of 20-byte keys and 16-byte values where this \
             version's is an array of 4-byte keys and 40-byte values. Detach every interface \
             that uses them (`lb-ctl detach IFACE`"
        )),
        "{out}"
    );
    assert!(!out.stderr.contains("SERVICES is"), "{out}");
    // Nothing attached, and the other version's pins are still there.
    assert!(!lb_ctl::maps::pins::link_pin(net.pins(), "eth0").exists());
    assert!(net.pins().join("PERSIST").exists() && net.pins().join("SERVICES").exists());
    for name in ["PERSIST", "SERVICES"] {
        std::fs::remove_file(net.pins().join(name)).expect("removing a test pin");
    }
}

#[test]
fn failed_attach_of_a_second_interface_registers_nothing() {
    let net = CliLab::new();
    net.attach();
    let ifaces = net.pins().join(names::IFACES).display().to_string();
    // IFACES is an array indexed by ifindex: the registered slots are those whose
    // `registered` byte (the 7th of the value) is set.
    let entries = || -> Vec<Value> {
        let out = bpftool(&["-j", "map", "dump", "pinned", &ifaces]);
        assert!(out.status.success(), "{out}");
        let all = serde_json::from_str::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_else(|| panic!("bpftool map dump is not a JSON array:\n{out}"));
        all.into_iter()
            .filter(|e| e["value"][6].as_str().is_some_and(|b| b != "0x00"))
            .collect()
    };
    let before = entries();
    assert_eq!(before.len(), 1, "eth0 registered:\n{before:?}");

    net.director_ip(&["link add brx type bridge", "link set brx up"]);
    net.ctl(&["attach", "brx"]).fails();
    assert!(!net.pins().join("link-brx").exists());
    let list = net.list();
    assert!(list.contains(", attached to eth0; "), "{list}");
    assert_eq!(
        entries(),
        before,
        "the failed attach of brx left brx registered in IFACES"
    );
}

/// `bpftool map show` of the map pinned as `name` under the lab's pin directory.
fn pinned_map(net: &CliLab, name: &str) -> Value {
    let path = net.pins().join(name).display().to_string();
    let out = bpftool(&["-j", "map", "show", "pinned", &path]);
    assert!(out.status.success(), "{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("bpftool -j map show: {e}\n{out}"))
}

#[test]
fn attach_with_a_million_flows_makes_a_connection_table_of_that_size() {
    let net = CliLab::new();
    let mut memlock = Vec::new();
    for (flows, args) in [
        (1_048_576u64, &["attach", "eth0", "--flows", "1048576"][..]),
        (262_144, &["attach", "eth0"][..]),
    ] {
        net.ctl(args).ok();
        let map = pinned_map(&net, names::FLOWS);
        assert_eq!(map["max_entries"], flows, "FLOWS after {args:?}: {map:#}");
        let list = net.list();
        assert!(
            list.contains(&format!("; connection table 0 of {flows} in use, ")),
            "{list}"
        );
        let bytes = map["bytes_memlock"]
            .as_u64()
            .unwrap_or_else(|| panic!("no bytes_memlock: {map:#}"));
        let cache = pinned_map(&net, names::FLOW_CACHE);
        let cache_bytes = cache["bytes_memlock"].as_u64().unwrap_or(0);
        eprintln!(
            "FLOWS of {flows} entries: {bytes} bytes memlock ({} a flow); FLOW_CACHE: {cache_bytes} \
             bytes memlock ({} slots, {} possible CPUs)",
            bytes / flows,
            cache["max_entries"],
            aya::util::nr_cpus().map_or(0, |n| n),
        );
        memlock.push(bytes);
        let out = net.ctl(&["detach", "eth0"]).ok();
        assert!(out.stdout.starts_with("detached from eth0;"), "{out}");
    }
    // Four times the entries take about four times the memory.
    assert!(
        memlock[0] > 3 * memlock[1] && memlock[0] < 5 * memlock[1],
        "FLOWS memlock at 1,048,576 and 262,144 entries: {memlock:?}"
    );
}
