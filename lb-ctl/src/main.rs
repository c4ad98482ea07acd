//! `lb-ctl`: the command line of the XDP director.

use std::{
    io::{IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Parser as _;
use lb_ctl::cli::args::{Cli, Command, Decap, Realserver, RealserverWant, TunnelArg};
use lb_ctl::{
    cli::director::Director,
    cli::export,
    cli::list,
    cli::privileges,
    cli::stats::{self, Rates},
    config,
    maps::Maps,
    maps::loader::Sizes,
    maps::lock,
    maps::pins,
    maps::view,
    net::netns,
    net::resolve,
    plan,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Import { file } = &cli.command {
        return import(file);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-ctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    // systemd's readiness socket, resolved in the namespace we were started in.
    if matches!(cli.command, Command::Run { .. }) {
        lb_ctl::daemon::notify::init()?;
    }
    // Before any other thread exists, so the whole process is inside.
    if let Some(ns) = &cli.global.netns {
        netns::enter(ns)?;
    }
    let dir = cli.global.pin_dir.as_path();
    match cli.command {
        Command::Attach {
            iface,
            mode,
            table_entries,
            flows,
            syn_flows,
        } => {
            privileges::require("attach")?;
            let _lock = write_lock(dir, cli.global.wait)?;
            let sizes = Sizes {
                table_entries,
                flows,
                syns: syn_flows,
            };
            pins::attach_all(dir, &[iface], mode, &sizes, |line| println!("{line}"))?;
        }
        Command::Detach { iface } => {
            privileges::require("detach")?;
            let _lock = write_lock(dir, cli.global.wait)?;
            let d = pins::detach(dir, &iface)?;
            if d.last {
                println!(
                    "detached from {iface}; no interface left, removed the pins under {}",
                    dir.display()
                );
            } else {
                println!("detached from {iface}");
            }
        }
        Command::Apply {
            file,
            dry_run,
            resolve_timeout,
        } => {
            privileges::require("apply")?;
            // A dry run writes nothing: it needs no lock.
            let _lock = if dry_run {
                None
            } else {
                Some(write_lock(dir, cli.global.wait)?)
            };
            run_apply(dir, &file, dry_run, resolve_timeout)?;
        }
        Command::List {
            connections,
            stats,
            rate,
            interval,
        } => {
            privileges::require("list")?;
            let maps = pins::open(dir)?;
            let interfaces = || pins::attached_interfaces(dir);
            if connections {
                print!("{}", list::render_connections(&view::connections(&maps)?));
            } else if stats {
                let snap = view::Snapshot::read(&maps)?;
                print!("{}", list::render_stats(&snap, &interfaces()?));
            } else if rate {
                if interval.is_zero() {
                    bail!("--interval must be longer than 0s");
                }
                let first = view::Snapshot::read(&maps)?;
                let at = Instant::now();
                thread::sleep(interval);
                let second = view::Snapshot::read(&maps)?;
                let rates = Rates::between(&first, &second, at.elapsed());
                print!("{}", list::render_rate(&second, &rates, &interfaces()?));
            } else {
                let shown = Director::read(&maps, dir)?;
                print!("{}", list::render(&shown, &pins::attached_interfaces(dir)?));
            }
        }
        Command::Export { ipvsadm, yaml: _ } => {
            privileges::require("export")?;
            let maps = pins::open(dir)?;
            let snap = view::Snapshot::read(&maps)?;
            if ipvsadm {
                let rules = export::ipvsadm::rules(&snap);
                for w in &rules.warnings {
                    eprintln!("warning: {w}");
                }
                print!("{}", rules.text);
            } else {
                print!("{}", export::yaml::service_file(&snap));
            }
        }
        Command::Stats {
            json,
            prometheus,
            watch,
            count,
        } => {
            privileges::require("stats")?;
            let maps = pins::open(dir)?;
            let render = |shown: &Director, rates: Option<&Rates>| -> Result<String> {
                Ok(if json {
                    stats::render_json(shown)? + "\n"
                } else if prometheus {
                    stats::render_prometheus(shown)?
                } else {
                    stats::render_text(shown, rates)
                })
            };
            match watch {
                None => print!("{}", render(&Director::read(&maps, dir)?, None)?),
                Some(secs) => {
                    if !(secs > 0.0 && secs.is_finite()) {
                        bail!("--watch takes a positive number of seconds, not {secs}");
                    }
                    watch_stats(&maps, dir, Duration::from_secs_f64(secs), count, render)?;
                }
            }
        }
        Command::Run {
            file,
            ifaces,
            mode,
            detach_on_exit,
            resolve_timeout,
            max_concurrent_checks,
            reconcile_interval,
            hook_timeout,
            reload_settle,
            summary_interval,
            listen,
        } => {
            privileges::require("run")?;
            if reconcile_interval.is_zero() || summary_interval.is_zero() {
                bail!("--reconcile-interval and --summary-interval must be longer than 0s");
            }
            lb_ctl::daemon::init_logging(cli.global.log_format);
            // Held for as long as the daemon runs: it is the only writer meanwhile.
            let holder = lock::Holder::me(command_line(), true);
            let _lock = lock::acquire(dir, &holder, cli.global.wait, |h| {
                eprintln!(
                    "waiting for {}: pid {} is writing it (`{}`)",
                    dir.display(),
                    h.pid,
                    h.command
                )
            })?;
            // The tokio runtime starts here, after --netns was entered.
            lb_ctl::daemon::run(lb_ctl::daemon::Options {
                file,
                ifaces,
                mode,
                pin_dir: dir.to_path_buf(),
                detach_on_exit,
                resolve_timeout,
                max_concurrent: max_concurrent_checks,
                reconcile_every: reconcile_interval,
                hook_timeout,
                reload_settle,
                summary_every: summary_interval,
                listen,
            })?;
        }
        Command::Vrrp { file, hook_timeout } => {
            privileges::require("vrrp")?;
            let config = match config::load(&file) {
                Ok(c) => c,
                Err(e) => bail!("{e}"),
            };
            lb_ctl::daemon::init_logging(cli.global.log_format);
            // The tokio runtime starts here, after --netns was entered.
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?
                .block_on(lb_ctl::vrrp::instances::run_until_signal(
                    config,
                    file.clone(),
                    lock::vrrp_reports_dir(dir),
                    hook_timeout,
                ))?;
        }
        Command::Completions { shell } => {
            let script = lb_ctl::cli::manual::completions(shell);
            std::io::stdout()
                .write_all(&script)
                .context("writing the completion script to stdout")?;
        }
        Command::Man { dir } => {
            for page in lb_ctl::cli::manual::write_pages(&dir)? {
                println!("{}", page.display());
            }
        }
        Command::Decap { action } => run_decap(dir, action, cli.global.wait)?,
        Command::Realserver { action } => {
            privileges::require("realserver")?;
            if !run_realserver(dir, action, cli.global.wait)? {
                return Err(anyhow::anyhow!("some settings are wrong (see above)"));
            }
        }
        Command::Doctor {
            file,
            timeout,
            json,
        } => {
            privileges::require("doctor")?;
            let lines = lb_ctl::doctor::run(&file, dir, timeout)?;
            if json {
                print!("{}", lb_ctl::doctor::report::render_json(&lines)?);
            } else {
                print!("{}", lb_ctl::doctor::report::render(&lines));
            }
            if !lb_ctl::doctor::report::all_ok(&lines) {
                bail!(
                    "{} check(s) failed",
                    lines.iter().filter(|l| l.fix.is_some()).count()
                );
            }
        }
        // main() runs it before, for its exit status (0, 1 or 2).
        Command::Import { .. } => bail!("import is run by main()"),
        Command::Genhash {
            server,
            port,
            url,
            ssl,
            host,
            timeout,
            verbose,
        } => {
            let fetched = lb_ctl::cli::genhash::genhash(&lb_ctl::cli::genhash::Request {
                server,
                port,
                url,
                ssl,
                host,
                timeout,
            })?;
            if !(200..300).contains(&fetched.status) {
                eprintln!(
                    "warning: status {}; a check of this page needs `status: [{}]`",
                    fetched.status, fetched.status
                );
            }
            print!("{}", fetched.render(verbose));
        }
    }
    Ok(())
}

/// `lb-ctl import`: the YAML on stdout, the notes on stderr; 0 complete, 1 incomplete (or
/// the result does not validate), 2 nothing imported.
fn import(file: &Path) -> ExitCode {
    let imported = match lb_ctl::import::import_file(file) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("lb-ctl: import: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", imported.yaml);
    for n in &imported.notes {
        eprintln!("{n}");
    }
    let mut complete = imported.complete();
    // The output must be a valid service file; say so if an import falls short of it.
    if let Err(e) = config::parse(&imported.yaml, "(the imported file)") {
        for d in &e.diagnostics {
            eprintln!(
                "{}: not supported: the imported file does not validate: {d}",
                file.display()
            );
        }
        complete = false;
    }
    if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `lb-ctl decap`: its pins live under `PIN_DIR/decap`, with a write lock of their own.
fn run_decap(global_dir: &Path, action: Option<Decap>, wait: Duration) -> Result<()> {
    use lb_ctl::maps::decap::{self, Attached, Settings};
    let dir = decap::pin_dir(global_dir);
    match action.unwrap_or(Decap::Status) {
        Decap::Status => {
            privileges::require("decap")?;
            let status = decap::status(&dir)?;
            print!("{}", lb_ctl::cli::decap::render(status.as_ref(), &dir));
        }
        Decap::Attach {
            iface,
            mode,
            gue_port,
            mut accept_dst,
        } => {
            privileges::require("decap attach")?;
            accept_dst.sort();
            accept_dst.dedup();
            let max = lb_common::decap::MAX_DSTS as usize;
            if accept_dst.len() > max {
                bail!(
                    "--accept-dst was given {} addresses; at most {max} are kept",
                    accept_dst.len()
                );
            }
            let _lock = write_lock(&dir, wait)?;
            let settings = Settings {
                gue_port,
                dsts: accept_dst,
            };
            let done = decap::attach(&dir, &iface, mode, &settings)?;
            let what = match done {
                Attached::New => format!(
                    "decapsulation attached to {iface} in {} mode; pinned under {}",
                    mode.as_str(),
                    dir.display()
                ),
                Attached::Already => format!(
                    "{iface} is already attached (pinned under {}); settings written",
                    dir.display()
                ),
            };
            println!("{what}\n{}", settings.describe());
        }
        Decap::Detach { iface } => {
            privileges::require("decap detach")?;
            let _lock = write_lock(&dir, wait)?;
            if decap::detach(&dir, &iface)? {
                println!(
                    "decapsulation detached from {iface}; no interface left, removed the pins \
                     under {}",
                    dir.display()
                );
            } else {
                println!("decapsulation detached from {iface}");
            }
        }
    }
    Ok(())
}

/// `lb-ctl realserver`; false when `check` found a wrong setting.
fn run_realserver(global_dir: &Path, action: Realserver, wait: Duration) -> Result<bool> {
    use lb_ctl::realserver::{self, Options, plan};
    let request = |w: RealserverWant| -> Result<plan::Request> {
        Ok(plan::Request {
            vips: w.vips,
            ifaces: realserver::ifaces_or_default(&w.ifaces)?,
            tunnel: w.tunnel.map(|t| match t {
                TunnelArg::Ipip => plan::Tunnel::Ipip,
                TunnelArg::Gue => plan::Tunnel::Gue(w.gue_port),
            }),
        })
    };
    let options = |root: PathBuf| Options {
        root,
        pin_dir: global_dir.to_path_buf(),
        wait,
    };
    match action {
        Realserver::Up {
            want,
            persist,
            root,
        } => {
            let opts = options(root.root);
            let done = realserver::up(&request(want)?, persist, &opts)?;
            print!("{}", realserver::render_up(&done, &opts.state_file()));
        }
        Realserver::Down { persist, root } => {
            let done = realserver::down(persist, &options(root.root))?;
            print!("{}", realserver::render_down(&done));
        }
        Realserver::Check { want, root } => {
            let lines = realserver::check(&request(want)?, &options(root.root))?;
            print!("{}", plan::render_check(&lines));
            return Ok(plan::all_ok(&lines));
        }
    }
    Ok(true)
}

/// The command line of this process, on one line, for the lock file.
fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .map(|a| {
            a.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
        })
        .collect();
    args.join(" ")
}

/// The pin directory's write lock, for a command that writes it.
fn write_lock(dir: &Path, wait: Duration) -> Result<lock::WriteLock> {
    let holder = lock::Holder::me(command_line(), false);
    lock::acquire(dir, &holder, wait, |h| {
        eprintln!(
            "waiting for {}: pid {} is writing it (`{}`); at most {:.0?}",
            dir.display(),
            h.pid,
            h.command,
            wait
        )
    })
}

fn run_apply(dir: &Path, file: &Path, dry_run: bool, timeout: Duration) -> Result<()> {
    // The maps are read on a second thread while this one parses the file: parsing a large
    // file is most of an apply. The file's errors come first, as without the overlap.
    let (parsed, opened) = thread::scope(|s| {
        let reading = s.spawn(|| {
            let maps = pins::open(dir)?;
            let current = plan::Current::read(&maps)?;
            anyhow::Ok((maps, current))
        });
        let parsed = config::load(file);
        let opened = reading
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (parsed, opened)
    });
    let config = match parsed {
        Ok(c) => c,
        Err(e) => bail!("{e}"),
    };
    let (mut maps, current) = opened?;
    let ifindexes: Vec<u32> = maps.iface_indexes()?;
    // Before anything is written: a backend that is the director itself applies nothing.
    lb_ctl::net::own_addresses::check(&config, &file.display().to_string(), &ifindexes)?;
    let resolved = resolve::backends(&config, &ifindexes, timeout);
    let down = plan::Down::new();
    let plan =
        lb_ctl::maps::write::apply_read(&mut maps, &current, &config, &resolved, &down, dry_run)?;
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    // Tunnel backends' packets need interfaces that forward; the sysctls are the user's.
    let names: Vec<String> = (ifindexes.iter())
        .map(|&i| lb_ctl::net::link::name(i))
        .collect::<Result<_>>()
        .context("naming the attached interfaces")?;
    let need = lb_ctl::net::forwarding::Families::of_config(&config);
    for w in lb_ctl::net::forwarding::warnings(&names, need) {
        eprintln!("warning: {w}");
    }
    let name = file.display();
    if plan.is_empty() {
        println!("no changes: the data path already matches {name}");
        return Ok(());
    }
    for c in &plan.changes {
        println!("{c}");
    }
    if dry_run {
        println!("dry run: {} change(s) not applied", plan.changes.len());
    } else {
        println!("applied {name}: {} change(s)", plan.changes.len());
    }
    Ok(())
}

fn watch_stats(
    maps: &Maps,
    dir: &Path,
    every: Duration,
    count: Option<u64>,
    render: impl Fn(&Director, Option<&Rates>) -> Result<String>,
) -> Result<()> {
    let tty = std::io::stdout().is_terminal();
    let mut prev = Director::read(maps, dir)?;
    let mut prev_at = Instant::now();
    let mut n = 0;
    while count.is_none_or(|c| n < c) {
        thread::sleep(every);
        let shown = Director::read(maps, dir)?;
        let rates = Rates::between(&prev.maps, &shown.maps, prev_at.elapsed());
        prev_at = Instant::now();
        let text = render(&shown, Some(&rates))?;
        let mut out = std::io::stdout().lock();
        if tty {
            // Clear the screen and go home, then redraw.
            write!(out, "\x1b[2J\x1b[H")?;
        }
        write!(out, "{text}")?;
        out.flush()?;
        prev = shown;
        n += 1;
    }
    Ok(())
}
