//! SigmaHQ's process_creation rules: at least 97% compile, into a pack under 1 MiB that verifies.

use std::path::Path;

use bulwark_sigma::{compile_paths, Options};

#[test]
fn at_least_97_percent_of_process_creation_compiles() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus/sigma/rules/windows/process_creation");
    if !dir.is_dir() {
        println!("skipped: {} is absent", dir.display());
        return;
    }
    let c = compile_paths(&[dir], &Options::default()).unwrap();
    let total = c.rules.len() + c.skipped.len();
    let rate = c.rules.len() as f64 / total as f64;
    for s in &c.skipped {
        println!("{s}");
    }
    println!(
        "compiled {} of {total} ({:.1}%), pack {} bytes",
        c.rules.len(),
        rate * 100.0,
        c.pack.len()
    );
    assert!(total > 1000, "{total} rules found");
    assert!(rate >= 0.97, "only {:.1}% compiled", rate * 100.0);
    assert!(c.pack.len() < 1 << 20, "pack is {} bytes", c.pack.len());
    assert!(c.skipped.iter().all(|s| !s.path.is_empty()));
}
