//! `bulwark sim`: the fleet simulator (`bulwark-sim`): a deterministic run of a scenario in which
//! every endpoint runs the endpoint service's agent, the boot-count guard, the loader and the
//! verifier, against the rollout controller; prints what it measured.

use std::path::PathBuf;
use std::process::ExitCode;

use bulwark_sim::engine::{Sim, SimError, Transport};
use bulwark_sim::scenario::{Scenario, BUILTIN_NAMES};
use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};

use crate::EXIT_USAGE;

pub fn commands() -> Vec<Command> {
    vec![Command::new("sim")
        .about("Simulate a fleet taking a release: the blast radius of a bad one, and whether the rollout stops it")
        .arg(
            Arg::new("scenario")
                .long("scenario")
                .required(true)
                .help(format!("a built-in scenario ({}) or a TOML file", BUILTIN_NAMES.join(", "))),
        )
        .arg(Arg::new("endpoints").long("endpoints").value_parser(value_parser!(u64)).help("the fleet's size (the scenario's otherwise)"))
        .arg(Arg::new("hours").long("hours").value_parser(value_parser!(u64)).help("simulated hours (the scenario's otherwise)"))
        .arg(Arg::new("seed").long("seed").default_value("1").value_parser(value_parser!(u64)).help("the run's seed: the same seed gives the same run"))
        .arg(Arg::new("releases").long("releases").value_parser(value_parser!(u64).range(1..=10_000)).help("run K good releases (seeds SEED, SEED+1, ...) and count the halts: false halts against the fleet's noise"))
        .arg(Arg::new("transport").long("transport").default_value("inproc").value_parser(["inproc", "http"]).help("inproc: the server model in process (deterministic); http: the real bulwark-server over TLS on loopback and each endpoint's service HTTPS client, an accelerated clock, at most 2,000 endpoints (the scenario's plan must fit the fleet)"))
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print one JSON object"))
        .arg(Arg::new("report").long("report").value_parser(value_parser!(PathBuf)).help("write an HTML report with charts to DIR/index.html"))]
}

pub fn run(name: &str, m: &ArgMatches) -> Option<ExitCode> {
    if name != "sim" {
        return None;
    }
    #[cfg(unix)]
    crate::allocator::keep_freed_memory();
    let scenario = m.get_one::<String>("scenario").cloned().unwrap_or_default();
    let mut s = match Scenario::load(&scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bulwark sim: {e}");
            return Some(ExitCode::from(EXIT_USAGE));
        }
    };
    if let Some(&n) = m.get_one::<u64>("endpoints") {
        s = match s.with_endpoints(n) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("bulwark sim: {e}");
                return Some(ExitCode::from(EXIT_USAGE));
            }
        };
    }
    if let Some(&h) = m.get_one::<u64>("hours") {
        s.fleet.hours = h;
    }
    let seed = m.get_one::<u64>("seed").copied().unwrap_or(1);
    let transport = match m.get_one::<String>("transport").map(String::as_str) {
        Some("http") => Transport::Http,
        _ => Transport::InProcess,
    };
    let started = std::time::Instant::now();
    let result = match m.get_one::<u64>("releases") {
        Some(&k) => Sim::run_releases(&s, seed, k, transport),
        None => Sim::with_transport(&s, seed, transport).and_then(Sim::run_with_timeline),
    };
    let (outcome, timeline) = match result {
        Ok(r) => r,
        Err(e @ (SimError::NotGood(_) | SimError::Http(_))) => {
            eprintln!("bulwark sim: {e}");
            return Some(ExitCode::from(EXIT_USAGE));
        }
        Err(e) => {
            eprintln!("bulwark sim: {e}");
            return Some(ExitCode::FAILURE);
        }
    };
    if let Some(dir) = m.get_one::<PathBuf>("report") {
        match bulwark_sim::report::write(dir, &outcome, &s.description, &timeline) {
            Ok(path) => eprintln!("bulwark sim: report written to {}", path.display()),
            Err(e) => {
                eprintln!(
                    "bulwark sim: cannot write the report in {}: {e}",
                    dir.display()
                );
                return Some(ExitCode::FAILURE);
            }
        }
    }
    if m.get_flag("json") {
        println!("{}", outcome.to_json());
        return Some(ExitCode::SUCCESS);
    }
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v}"));
    println!("scenario                  {}", outcome.scenario);
    println!("transport                 {}", outcome.transport);
    println!("endpoints                 {}", outcome.endpoints);
    println!("simulated hours           {}", outcome.simulated_hours);
    println!("bricked                   {}", outcome.bricked);
    println!("crashed at least once     {}", outcome.crashed_once);
    println!(
        "most crashes, one machine {}",
        outcome.max_crashes_per_endpoint
    );
    println!("halted                    {}", outcome.halted);
    println!(
        "first crash after (min)   {}",
        opt(outcome.first_crash_after_minutes)
    );
    println!(
        "halt after (min)          {}",
        opt(outcome.halt_after_minutes)
    );
    println!(
        "on the release at the end {:.1}%",
        outcome.final_fraction_on_release * 100.0
    );
    println!("hours to 95%              {}", opt(outcome.hours_to_95pct));
    if let Some(b) = outcome.blocked_processes {
        println!("user processes blocked    {b}");
    }
    if let (Some(h), Some(k)) = (outcome.false_halts, outcome.releases) {
        println!("false halts               {h} of {k} good releases");
    }
    for w in &outcome.waves {
        println!(
            "wave {:<10} {:>7} endpoints, {:>7} ran it, {:>6} crashed, {:>5} quarantined, opened after {} min",
            w.name,
            w.endpoints,
            w.exposed,
            w.crashed,
            w.quarantines,
            w.opened_after_minutes.map_or_else(|| "-".to_owned(), |m| m.to_string())
        );
    }
    eprintln!("bulwark sim: {:.1} s", started.elapsed().as_secs_f64());
    Some(ExitCode::SUCCESS)
}
