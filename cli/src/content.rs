//! Content commands: `asm`, `disasm`, `verify`, `schema`.

use std::process::ExitCode;

use clap::{ArgMatches, Command};

pub fn commands() -> Vec<Command> {
    vec![Command::new("schema").about("Print the built-in event schema and its hash")]
}

pub fn run(name: &str, _m: &ArgMatches) -> Option<ExitCode> {
    match name {
        "schema" => Some(schema()),
        _ => None,
    }
}

fn schema() -> ExitCode {
    let hash: String = bulwark_interpreter::schema_hash().iter().map(|b| format!("{b:02x}")).collect();
    println!("schema hash {hash}");
    for t in bulwark_interpreter::EventType::ALL {
        println!("\nevent {} (id {}, {} fields, Sysmon event ids {:?})", t.name(), t.id(), t.field_count(), t.sysmon_event_ids());
        for f in t.fields() {
            println!("  {:>2} {:<20} {}", f.index, f.name, f.ty.name());
        }
    }
    ExitCode::SUCCESS
}
