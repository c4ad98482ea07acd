//! `cargo xtask bench` (control-plane part): how the control plane scales, in-process, with
//! `lb_ctl` as a library and the XDP program loaded (not attached) at its default map sizes.
//! No traffic is sent.
//!
//! - `apply` of 1,000 services x 16 backends (wrr) from empty: parse, read the maps, plan,
//!   write. Backend MACs are supplied (as the packet-level harness does): the real CLI also
//!   asks the kernel's neighbour table, which is not measured here.
//! - what `lb-ctl apply -f` does with that file end to end (parse, read, plan, write): with one
//!   backend's weight changed, and unchanged.
//! - a Maglev table of 65,537 entries over 1,000 backends (`lb_ctl::sched::maglev::build`).
//! - the `stats --json` scrape at 16,000 backends (`Snapshot::read` + `render_json`).
//! - the kernel memory the maps take at default sizes (`memlock:` of each map's fdinfo).
//!
//! Each measurement is taken several times; the median is compared with its target. Targets
//! are reported, never asserted. Results go to `bench/results/scale.json` (or `--out FILE`).

use std::{
    collections::HashMap,
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    os::fd::{AsFd as _, AsRawFd as _},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::MapInfo;
use lb_common::names;
use lb_ctl::{
    cli::{director::Director, stats},
    config::{self, Config},
    maps::Maps,
    maps::loader::{self, Sizes},
    maps::view::Snapshot,
    plan::{self, Current, Down, Macs},
    sched::maglev,
};
use serde_json::{Value, json};

const SERVICES: usize = 1000;
const BACKENDS_PER_SERVICE: usize = 16;
const MAGLEV_ENTRIES: u32 = 65_537;
const MAGLEV_BACKENDS: usize = 1000;

/// Targets in milliseconds: from empty and the scrape from issue 10, `apply -f` end to end of
/// one change and of the same file again from issue 15.
const TARGET_APPLY_MS: f64 = 1000.0;
const TARGET_CHANGE_MS: f64 = 50.0;
const TARGET_UNCHANGED_MS: f64 = 100.0;
const TARGET_STATS_MS: f64 = 100.0;

struct Args {
    rounds: usize,
    out: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        rounds: 3,
        out: lb_tests::bench_results_dir().join("scale.json"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rounds" => args.rounds = value()?.parse().context("--rounds")?,
            "--out" => args.out = PathBuf::from(value()?),
            "--help" | "-h" => {
                println!("lb-bench-scale [--rounds N (3)] [--out FILE (bench/results/scale.json)]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; see --help"),
        }
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    Ok(args)
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "lb-bench-scale loads the XDP program and fills its maps: run it as root \
             (or with CAP_BPF + CAP_NET_ADMIN)"
        );
    }
    Ok(())
}

/// VIP of service `s`: 10.0.0.0/16, distinct per service.
fn vip(s: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, (s / 250) as u8, (s % 250 + 1) as u8)
}

/// Address of backend `b` of service `s`: 10.1.0.0/16, distinct over the whole config.
fn backend(s: usize, b: usize) -> Ipv4Addr {
    let n = s * BACKENDS_PER_SERVICE + b;
    Ipv4Addr::new(10, 1, (n / 250) as u8, (n % 250 + 1) as u8)
}

/// The service file: `services` x `per` backends, wrr, one weight changed if `bump`.
fn config_yaml(services: usize, per: usize, bump: Option<(usize, usize, u32)>) -> String {
    let mut y = String::with_capacity(services * (120 + per * 50));
    y.push_str("services:\n");
    for s in 0..services {
        let _ = write!(
            y,
            "  - name: svc-{s}\n    vip: {}\n    port: 80\n    scheduler: wrr\n    backends:\n",
            vip(s)
        );
        for b in 0..per {
            let weight = match bump {
                Some((bs, bb, w)) if (bs, bb) == (s, b) => w,
                _ => 1,
            };
            let _ = writeln!(
                y,
                "      - address: {}\n        weight: {weight}",
                backend(s, b)
            );
        }
    }
    y
}

fn macs_for(config: &Config) -> Macs {
    let mut macs = HashMap::new();
    for s in &config.services {
        for b in &s.backends {
            let (c, d) = match b.address {
                std::net::IpAddr::V4(a) => (a.octets()[2], a.octets()[3]),
                std::net::IpAddr::V6(a) => (a.octets()[14], a.octets()[15]),
            };
            macs.insert(b.address, Ok([0x02, 0, 0x0a, 0x01, c, d]));
        }
    }
    macs
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn time<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, ms(t.elapsed())))
}

/// (min, median, max)
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// The phases of one apply, in milliseconds, and the whole of it (parse and read overlap).
#[derive(Default, Clone, Copy)]
struct Phases {
    parse: f64,
    read: f64,
    plan: f64,
    execute: f64,
    wall: f64,
}

impl Phases {
    fn total(&self) -> f64 {
        self.wall
    }
}

/// What `lb-ctl apply -f FILE` does (MACs given): parse the file while the maps are read on
/// a second thread, then plan and write.
fn timed_apply(maps: &mut Maps, yaml: &str) -> Result<(plan::Plan, Phases)> {
    let started = Instant::now();
    let (parsed, read) = std::thread::scope(|s| {
        let shared: &Maps = maps;
        let reading = s.spawn(|| time(|| Current::read(shared)));
        let parsed = time(|| {
            config::parse(yaml, "bench.yaml").map_err(|e| anyhow::anyhow!("bench config:\n{e}"))
        });
        let read = reading
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (parsed, read)
    });
    let (config, parse) = parsed?;
    let (current, read) = read?;
    let macs = macs_for(&config).into();
    let (plan, plan_ms) = time(|| plan::plan(&current, &config, &macs, &Down::new()))?;
    let ((), execute) = time(|| plan.execute(maps))?;
    if !plan.warnings.is_empty() {
        bail!("unexpected warnings: {:?}", &plan.warnings[..1]);
    }
    Ok((
        plan,
        Phases {
            parse,
            read,
            plan: plan_ms,
            execute,
            wall: ms(started.elapsed()),
        },
    ))
}

fn median_phases(all: &[Phases]) -> Phases {
    let med = |f: fn(&Phases) -> f64| spread(all.iter().map(f).collect()).1;
    Phases {
        parse: med(|p| p.parse),
        read: med(|p| p.read),
        plan: med(|p| p.plan),
        execute: med(|p| p.execute),
        wall: med(|p| p.wall),
    }
}

fn phases_text(p: &Phases) -> String {
    format!(
        "median parse {:.1} ms (meanwhile read {:.1} ms), plan {:.1} ms, write {:.1} ms; whole {:.1} ms",
        p.parse, p.read, p.plan, p.execute, p.wall
    )
}

fn phases_json(p: &Phases) -> Value {
    json!({"parse_ms": p.parse, "read_ms": p.read, "plan_ms": p.plan, "execute_ms": p.execute, "wall_ms": p.wall})
}

/// One result row.
struct Row {
    name: String,
    samples: Vec<f64>,
    unit: &'static str,
    target: Option<f64>,
    detail: String,
}

impl Row {
    fn json(&self) -> Value {
        let (min, median, max) = spread(self.samples.clone());
        json!({
            "name": self.name,
            "unit": self.unit,
            "min": min,
            "median": median,
            "max": max,
            "target": self.target,
            "met": self.target.map(|t| median < t),
            "detail": self.detail,
        })
    }
}

/// Kernel memory of one map: the `memlock:` line of its fdinfo.
fn memlock(fd: i32) -> Result<u64> {
    let path = format!("/proc/self/fdinfo/{fd}");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no memlock line in {path}"))
}

/// Every map the director program uses, with its size and kernel memory.
fn map_memory(ebpf: &mut aya::Ebpf) -> Result<Vec<Value>> {
    let info = loader::program(ebpf, names::PROGRAM)?
        .info()
        .context("program info")?;
    let ids = info
        .map_ids()
        .context("the program's map ids")?
        .context("this kernel does not report a program's maps")?;
    let mut out = Vec::new();
    for id in ids {
        let m = MapInfo::from_id(id).with_context(|| format!("map {id}"))?;
        let fd = m.fd().with_context(|| format!("fd of map {id}"))?;
        let bytes = memlock(fd.as_fd().as_raw_fd())?;
        out.push(json!({
            "name": m.name_as_str().unwrap_or("?"),
            "type": format!("{:?}", m.map_type().ok()),
            "max_entries": m.max_entries(),
            "key_size": m.key_size(),
            "value_size": m.value_size(),
            "memlock_bytes": bytes,
        }));
    }
    out.sort_by_key(|v| std::cmp::Reverse(v["memlock_bytes"].as_u64().unwrap_or(0)));
    Ok(out)
}

/// Where the time of `Current::read` and `Snapshot::read` goes: the same map calls, timed one
/// kind at a time (the maps hold the full config), beside the calls they replace.
fn read_profile(maps: &Maps) -> Result<Value> {
    let (_, services_iterate_ms) = time(|| {
        maps.services
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .context("SERVICES")
    })?;
    let (services, services_batch_ms) = time(|| lb_ctl::maps::hash_batch(&maps.services))?;
    let (_, backends_batch_ms) =
        time(|| lb_ctl::maps::array_batch(&maps.backends, 0, maps.backends.len()))?;
    let (_, backends_mapped_ms) = time(|| lb_ctl::maps::mapped::array_copy(&maps.backends))?;
    let (_, backends_each_ms) = time(|| Ok(maps.backends.iter().filter(|e| e.is_ok()).count()))?;
    let (_, table_per_service_ms) = time(|| {
        for (_, s) in &services {
            lb_ctl::maps::array_batch(&maps.table, s.table_offset, s.table_len)?;
        }
        Ok(())
    })?;
    let (_, current_read_ms) = time(|| Current::read(maps))?;
    let (_, backend_counters_ms) = time(|| {
        for id in 0..(SERVICES * BACKENDS_PER_SERVICE) as u32 {
            maps.backend_counters(id)?;
        }
        Ok(())
    })?;
    let (_, service_counters_ms) = time(|| {
        for (_, s) in &services {
            maps.service_counters(s.id)?;
        }
        Ok(())
    })?;
    Ok(json!({
        "services_iterate_ms": services_iterate_ms,
        "services_one_batch_ms": services_batch_ms,
        "backends_65536_one_batch_ms": backends_batch_ms,
        "backends_mapped_ms": backends_mapped_ms,
        "backends_65536_one_lookup_each_ms": backends_each_ms,
        "table_one_batch_per_service_ms": table_per_service_ms,
        "current_read_ms": current_read_ms,
        "backend_counters_16000_percpu_lookups_ms": backend_counters_ms,
        "service_counters_1000_percpu_lookups_ms": service_counters_ms,
    }))
}

/// How `plan` grows with the number of services (16 backends each): from empty (in memory,
/// nothing written), and a one-weight change over maps that hold `n` services. Quadratic
/// growth (x4 per doubling) points at a per-item scan of all items.
fn plan_scaling(maps: &mut Maps, table_entries: u32) -> Result<Value> {
    let mut rows = Vec::new();
    for n in [250, 500, 1000] {
        let cfg = config::parse(&config_yaml(n, BACKENDS_PER_SERVICE, None), "s.yaml")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let macs = macs_for(&cfg).into();
        let empty = Current {
            table_entries,
            ..Current::default()
        };
        let from_empty = (0..3)
            .map(|_| Ok(time(|| plan::plan(&empty, &cfg, &macs, &Down::new()))?.1))
            .collect::<Result<Vec<f64>>>()?;
        let change = if n < SERVICES {
            lb_ctl::maps::apply(maps, &cfg, &macs, &Down::new(), false)?;
            let bumped = config::parse(
                &config_yaml(n, BACKENDS_PER_SERVICE, Some((n / 2, 7, 2))),
                "s.yaml",
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let current = Current::read(maps)?;
            let t = (0..3)
                .map(|_| Ok(time(|| plan::plan(&current, &bumped, &macs, &Down::new()))?.1))
                .collect::<Result<Vec<f64>>>()?;
            Some(spread(t).0)
        } else {
            None
        };
        rows.push(json!({
            "services": n,
            "backends": n * BACKENDS_PER_SERVICE,
            "plan_from_empty_ms": spread(from_empty).0,
            "plan_one_change_ms": change,
        }));
    }
    lb_ctl::maps::apply(
        maps,
        &config::parse("services: []\n", "e.yaml").map_err(|e| anyhow::anyhow!("{e}"))?,
        &Macs::new().into(),
        &Down::new(),
        false,
    )?;
    Ok(json!(rows))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    require_root()?;
    let started = Instant::now();
    let sizes = Sizes::default();
    eprintln!(
        "==> loading the XDP program with default map sizes (TABLE {} entries, FLOWS {})",
        sizes.table_entries, sizes.flows
    );
    let mut ebpf = loader::load(&sizes, None).context("loading the XDP program")?;
    let memory = map_memory(&mut ebpf)?;
    let total_memory: u64 = memory
        .iter()
        .filter_map(|m| m["memlock_bytes"].as_u64())
        .sum();
    let mut maps = Maps::from_ebpf(&mut ebpf)?;

    eprintln!("==> how plan grows: 250, 500, 1000 services");
    let mut scaling = plan_scaling(&mut maps, sizes.table_entries)?;
    let full = config_yaml(SERVICES, BACKENDS_PER_SERVICE, None);
    let empty = "services: []\n";
    let mut rows = Vec::new();

    // 1. Apply from empty, then remove everything again, `rounds` times; the last round
    //    leaves the config in place.
    eprintln!(
        "==> apply {SERVICES} services x {BACKENDS_PER_SERVICE} backends (wrr) from empty, {} rounds",
        args.rounds
    );
    let mut applies = Vec::new();
    let mut removes = Vec::new();
    let mut changes_listed = 0;
    for round in 0..args.rounds {
        let (plan, p) = timed_apply(&mut maps, &full)?;
        changes_listed = plan.changes.len();
        applies.push(p);
        if round + 1 < args.rounds {
            let (_, r) = timed_apply(&mut maps, empty)?;
            removes.push(r);
        }
    }
    let apply_med = median_phases(&applies);
    rows.push(Row {
        name: format!("apply {SERVICES} services x {BACKENDS_PER_SERVICE} backends from empty"),
        samples: applies.iter().map(Phases::total).collect(),
        unit: "ms",
        target: Some(TARGET_APPLY_MS),
        detail: format!("{changes_listed} changes; {}", phases_text(&apply_med)),
    });
    if !removes.is_empty() {
        let m = median_phases(&removes);
        rows.push(Row {
            name: format!("apply an empty file over {SERVICES} services (remove all)"),
            samples: removes.iter().map(Phases::total).collect(),
            unit: "ms",
            target: None,
            detail: format!(
                "median read {:.1} ms, plan {:.1} ms, write {:.1} ms",
                m.read, m.plan, m.execute
            ),
        });
    }

    // 2. `lb-ctl apply -f` end to end: one backend's weight, back and forth; then the same
    //    file again.
    let kb = full.len() / 1024;
    let change_rounds = (args.rounds * 2).max(5);
    eprintln!("==> one-backend change (a weight), {change_rounds} times");
    let bumped = config_yaml(SERVICES, BACKENDS_PER_SERVICE, Some((SERVICES / 2, 7, 2)));
    let mut changes = Vec::new();
    for i in 0..change_rounds {
        let yaml = if i % 2 == 0 { &bumped } else { &full };
        let (plan, p) = timed_apply(&mut maps, yaml)?;
        if plan.changes.len() != 1 {
            bail!("a one-weight change planned {:?}", plan.changes);
        }
        changes.push(p);
    }
    let change_med = median_phases(&changes);
    rows.push(Row {
        name: format!("`lb-ctl apply -f` of the {kb} KB file, one backend's weight changed"),
        samples: changes.iter().map(Phases::total).collect(),
        unit: "ms",
        target: Some(TARGET_CHANGE_MS),
        detail: phases_text(&change_med),
    });
    eprintln!("==> the same file again, {change_rounds} times");
    let mut unchanged = Vec::new();
    for _ in 0..change_rounds {
        let (plan, p) = timed_apply(&mut maps, &full)?;
        if !plan.is_empty() {
            bail!("the same file twice planned {:?}", plan.changes);
        }
        unchanged.push(p);
    }
    let unchanged_med = median_phases(&unchanged);
    rows.push(Row {
        name: format!("`lb-ctl apply -f` of the {kb} KB file again, unchanged"),
        samples: unchanged.iter().map(Phases::total).collect(),
        unit: "ms",
        target: Some(TARGET_UNCHANGED_MS),
        detail: phases_text(&unchanged_med),
    });

    // 3. Stats scrape at 16,000 backends.
    eprintln!(
        "==> stats --json at {} backends",
        SERVICES * BACKENDS_PER_SERVICE
    );
    let mut scrapes = Vec::new();
    let mut read_ms = Vec::new();
    let mut json_bytes = 0;
    for _ in 0..(args.rounds * 2).max(5) {
        let (snap, r) = time(|| Snapshot::read(&maps))?;
        let backends: usize = snap.services.iter().map(|s| s.backends.len()).sum();
        if backends != SERVICES * BACKENDS_PER_SERVICE {
            bail!("the snapshot has {backends} backends");
        }
        let shown = Director {
            maps: snap,
            vrrp: Vec::new(),
            forwarding_off: Vec::new(),
            announce: Vec::new(),
            sync: None,
        };
        let (text, j) = time(|| stats::render_json(&shown))?;
        json_bytes = text.len();
        scrapes.push(r + j);
        read_ms.push(r);
    }
    let (_, read_med, _) = spread(read_ms);
    rows.push(Row {
        name: format!(
            "stats --json at {} backends (read + render)",
            SERVICES * BACKENDS_PER_SERVICE
        ),
        samples: scrapes,
        unit: "ms",
        target: Some(TARGET_STATS_MS),
        detail: format!("median Snapshot::read {read_med:.1} ms; {json_bytes} bytes of JSON"),
    });

    // 4. Maglev.
    eprintln!("==> Maglev table: {MAGLEV_ENTRIES} entries x {MAGLEV_BACKENDS} backends");
    let names: Vec<String> = (0..MAGLEV_BACKENDS)
        .map(|i| {
            format!(
                "{}:80",
                backend(i / BACKENDS_PER_SERVICE, i % BACKENDS_PER_SERVICE)
            )
        })
        .collect();
    let members: Vec<maglev::Member> = names
        .iter()
        .enumerate()
        .map(|(i, name)| maglev::Member {
            id: i as u32,
            weight: 1,
            name,
        })
        .collect();
    let mut builds = Vec::new();
    for _ in 0..(args.rounds * 2).max(5) {
        let (table, t) = time(|| Ok(maglev::build(&members, MAGLEV_ENTRIES)))?;
        if table.len() != MAGLEV_ENTRIES as usize {
            bail!("the Maglev table has {} entries", table.len());
        }
        builds.push(t);
    }
    rows.push(Row {
        name: format!("Maglev table build, {MAGLEV_ENTRIES} entries x {MAGLEV_BACKENDS} backends"),
        samples: builds,
        unit: "ms",
        target: None,
        detail: String::new(),
    });

    let profile = read_profile(&maps)?;
    if let Some(last) = scaling.as_array_mut().and_then(|r| r.last_mut()) {
        last["plan_one_change_ms"] = json!(change_med.plan);
    }
    // Leave the maps empty (they go with this process anyway).
    timed_apply(&mut maps, empty)?;

    // Report.
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| measurement | median (min / max) | target | met |\n| --- | --- | --- | --- |"
    );
    for r in &rows {
        let (min, med, max) = spread(r.samples.clone());
        let (target, met) = match r.target {
            Some(t) => (
                format!("< {t:.0} {}", r.unit),
                if med < t { "met" } else { "not met" },
            ),
            None => ("-".to_string(), "-"),
        };
        let _ = writeln!(
            table,
            "| {} | {med:.1} {u} ({min:.1} / {max:.1}) | {target} | {met} |",
            r.name,
            u = r.unit
        );
    }
    let _ = writeln!(
        table,
        "| kernel memory of the maps at default sizes | {:.1} MiB ({total_memory} bytes) | - | - |",
        total_memory as f64 / (1 << 20) as f64
    );
    println!("{table}");
    for r in &rows {
        if !r.detail.is_empty() {
            println!("  {}: {}", r.name, r.detail);
        }
    }
    println!("\nmaps (memlock, largest first):");
    for m in &memory {
        println!(
            "  {:<14} {:>12} bytes  ({} entries x {}+{} bytes)",
            m["name"].as_str().unwrap_or("?"),
            m["memlock_bytes"],
            m["max_entries"],
            m["key_size"],
            m["value_size"]
        );
    }
    println!("\nread profile (the same map calls, one kind at a time): {profile}");
    println!("plan by size (min of 3): {scaling}");

    let out = json!({
        "services": SERVICES,
        "backends_per_service": BACKENDS_PER_SERVICE,
        "sizes": {"table_entries": sizes.table_entries, "flows": sizes.flows},
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "phases": {
            "apply_from_empty": phases_json(&apply_med),
            "one_backend_change": phases_json(&change_med),
            "unchanged": phases_json(&unchanged_med),
        },
        "read_profile": profile,
        "plan_scaling": scaling,
        "memory": {"total_bytes": total_memory, "maps": memory},
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    lb_tests::write_bench_json(&args.out, &out)?;
    eprintln!(
        "==> wrote {} ({:.1?})",
        args.out.display(),
        started.elapsed()
    );
    Ok(())
}
