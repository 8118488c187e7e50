//! `bulwark-stack-budget --image bulwark_driver.sys --pdb bulwark_driver.pdb`: every entry point's
//! deepest stack, against its budget; exit 1 if one is over.
//!
//! The budgets:
//! - **small: 8 KiB**, for what runs on a stack the kernel lends us: `DriverEntry`, the
//!   reinitialization routine, the worker thread, the process, image and registry callbacks, the
//!   dispatch routines and unload. An x64 kernel stack is 24 KiB; a callback runs on the stack of
//!   whatever thread created the process, mapped the image or wrote the registry, below the
//!   system-call entry, the I/O manager, file-system filters and other security products' frames,
//!   so we take a third and leave two thirds to the kernel and the drivers around us (Windows
//!   itself warns at 12 KiB used: `MmCanThreadFault` territory).
//! - **large: 56 KiB**, for `large_stack_callout`, which runs on the 64 KiB stack
//!   `KeExpandKernelStackAndCallout` provides (`LARGE_STACK_BYTES`: start-up, every IOCTL, the
//!   guard's tick; the x64 maximum is 70 KiB): 8 KiB are left for the kernel's frames around it.
//! - every call into the kernel (through the import table) is counted with a 1 KiB allowance for
//!   the kernel's frames below it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::ExitCode;

use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, ImageThunkData, PeFile64};
use pdb::FallibleIterator;
use stack_budget::{decode, deepest, table_functions, unwind_bytes, Code, Function, Policy};

const SMALL_BUDGET: u64 = 8 * 1024;
const LARGE_BUDGET: u64 = 56 * 1024;
const KERNEL_ALLOWANCE: u32 = 1024;

/// Entry points on a lent stack: the functions the driver registers with the kernel.
const SMALL_ENTRIES: [&str; 10] = [
    "driver_entry",
    "reinitialize",
    "worker",
    "on_process",
    "on_image",
    "on_registry",
    "dispatch_create_close",
    "dispatch_shutdown",
    "dispatch_ioctl",
    "driver_unload",
];
/// Recursive functions of the standard library whose depth their own code bounds, and the bound.
const BOUNDED_RECURSION: [(&str, u32); 2] = [
    ("core::slice::sort::unstable::quicksort::quicksort<", 64),
    ("core::slice::sort::shared::pivot::median3_rec<", 11),
];

/// The panic path: a panic ends in `KeBugCheckEx` (wdk-panic), so cycles through it (a message
/// that could panic while formatted) are cut, not refused.
const PANIC_PATH: [&str; 4] = [
    "core::panicking::",
    "core::str::slice_error_fail",
    "core::slice::index::",
    "wdk_panic::",
];

/// The entry point on the expanded stack.
const LARGE_ENTRY: &str = "large_stack_callout";

struct Args {
    image: String,
    pdb: String,
    small: u64,
    large: u64,
    allowance: u32,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        image: String::new(),
        pdb: String::new(),
        small: SMALL_BUDGET,
        large: LARGE_BUDGET,
        allowance: KERNEL_ALLOWANCE,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--image" => a.image = value()?,
            "--pdb" => a.pdb = value()?,
            "--budget-small" => a.small = number(value()?)?,
            "--budget-large" => a.large = number(value()?)?,
            "--kernel-call-allowance" => {
                a.allowance = u32::try_from(number(value()?)?).map_err(|e| e.to_string())?
            }
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if a.image.is_empty() || a.pdb.is_empty() {
        return Err(
            "usage: bulwark-stack-budget --image X.sys --pdb X.pdb [--budget-small N] \
                    [--budget-large N] [--kernel-call-allowance N]"
                .into(),
        );
    }
    Ok(a)
}

/// The image's code, imports, relocated pointers, and each `.pdata` function's frame.
/// `.pdata` functions: start RVA to (end RVA, stack bytes of the unwind information).
type Frames = HashMap<u32, (u32, u32)>;

fn read_image(data: &[u8]) -> Result<(Code, Frames), String> {
    let file = PeFile64::parse(data).map_err(|e| format!("not a PE32+ image: {e}"))?;
    let sections = file.section_table();
    let image_base = file.nt_headers().optional_header().image_base();
    let text = sections
        .iter()
        .find(|s| s.name == *b".text\0\0\0")
        .ok_or("no .text section")?;
    let text_rva = text.virtual_address.get(object::LittleEndian);
    let text_bytes = text
        .pe_data(data)
        .map_err(|e| format!(".text: {e}"))?
        .to_vec();
    let read = |rva: u32, len: usize| -> Option<Vec<u8>> {
        sections
            .pe_data_at(data, rva)?
            .get(..len)
            .map(<[u8]>::to_vec)
    };

    let mut imports = HashMap::new();
    if let Some(table) = file.import_table().map_err(|e| format!("imports: {e}"))? {
        let mut descriptors = table.descriptors().map_err(|e| format!("imports: {e}"))?;
        while let Some(d) = descriptors.next().map_err(|e| format!("imports: {e}"))? {
            let first = d.first_thunk.get(object::LittleEndian);
            let lookup = match d.original_first_thunk.get(object::LittleEndian) {
                0 => first,
                x => x,
            };
            let mut thunks = table.thunks(lookup).map_err(|e| format!("imports: {e}"))?;
            let mut slot = first;
            while let Some(thunk) = thunks
                .next::<pe::ImageNtHeaders64>()
                .map_err(|e| format!("imports: {e}"))?
            {
                let name = match table.import::<pe::ImageNtHeaders64>(thunk) {
                    Ok(object::read::pe::Import::Name(_, name)) => {
                        String::from_utf8_lossy(name).into_owned()
                    }
                    _ => format!("ordinal {}", thunk.raw()),
                };
                imports.insert(slot, name);
                slot = slot.saturating_add(8);
            }
        }
    }

    let mut pointers = BTreeMap::new();
    if let Some(mut blocks) = file
        .data_directories()
        .relocation_blocks(data, &sections)
        .map_err(|e| format!("relocations: {e}"))?
    {
        while let Some(block) = blocks.next().map_err(|e| format!("relocations: {e}"))? {
            for r in block {
                if r.typ == pe::IMAGE_REL_BASED_DIR64 {
                    if let Some(bytes) = read(r.virtual_address, 8) {
                        let mut v = [0u8; 8];
                        v.copy_from_slice(&bytes);
                        let target = u64::from_le_bytes(v).wrapping_sub(image_base);
                        if let Ok(target) = u32::try_from(target) {
                            pointers.insert(r.virtual_address, target);
                        }
                    }
                }
            }
        }
    }

    // .pdata: RUNTIME_FUNCTION { begin, end, unwind info }.
    let mut frames = HashMap::new();
    if let Some(dir) = file.data_directory(pe::IMAGE_DIRECTORY_ENTRY_EXCEPTION) {
        let pdata = dir
            .data(data, &sections)
            .map_err(|e| format!(".pdata: {e}"))?;
        for entry in pdata.chunks_exact(12) {
            let word = |i: usize| {
                let mut b = [0u8; 4];
                b.copy_from_slice(entry.get(i..i + 4).unwrap_or(&[0; 4]));
                u32::from_le_bytes(b)
            };
            let (begin, end, info) = (word(0), word(4), word(8));
            let bytes = unwind_bytes(&read, info)
                .ok_or_else(|| format!("unwind information at {info:#x} for {begin:#x}"))?;
            frames.insert(begin, (end, bytes));
        }
    }
    Ok((
        Code {
            text_rva,
            text: text_bytes,
            imports,
            pointers,
        },
        frames,
    ))
}

/// The PDB's procedures: RVA to (name, length).
fn read_pdb(path: &str) -> Result<BTreeMap<u32, (String, u32)>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut pdb = pdb::PDB::open(file).map_err(|e| format!("{path}: {e}"))?;
    let map = pdb.address_map().map_err(|e| format!("{path}: {e}"))?;
    let dbi = pdb
        .debug_information()
        .map_err(|e| format!("{path}: {e}"))?;
    let mut modules = dbi.modules().map_err(|e| format!("{path}: {e}"))?;
    let mut out = BTreeMap::new();
    while let Some(module) = modules.next().map_err(|e| format!("{path}: {e}"))? {
        let Some(info) = pdb
            .module_info(&module)
            .map_err(|e| format!("{path}: {e}"))?
        else {
            continue;
        };
        let mut symbols = info.symbols().map_err(|e| format!("{path}: {e}"))?;
        while let Some(symbol) = symbols.next().map_err(|e| format!("{path}: {e}"))? {
            if let Ok(pdb::SymbolData::Procedure(p)) = symbol.parse() {
                if let Some(rva) = p.offset.to_rva(&map) {
                    out.entry(rva.0)
                        .or_insert_with(|| (p.name.to_string().into_owned(), p.len));
                }
            }
        }
    }
    Ok(out)
}

/// The function of the Windows layer (`bulwark_driver::windows`, where every routine the kernel
/// calls is) whose name's last path component is `name` (generic arguments ignored).
fn find(functions: &[Function], name: &str) -> Vec<usize> {
    functions
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            let base = f.name.split('<').next().unwrap_or(&f.name);
            base.starts_with("bulwark_driver::windows::") && base.rsplit("::").next() == Some(name)
        })
        .map(|(i, _)| i)
        .collect()
}

fn run() -> Result<bool, String> {
    let a = args()?;
    let data = std::fs::read(&a.image).map_err(|e| format!("{}: {e}", a.image))?;
    let (code, frames) = read_image(&data)?;
    let procs = read_pdb(&a.pdb)?;
    let mut functions: Vec<Function> = procs
        .iter()
        .map(|(&rva, (name, len))| Function {
            name: name.clone(),
            rva,
            len: *len,
            frame: frames.get(&rva).map_or(0, |f| f.1).saturating_add(8),
        })
        .collect();
    // Code with unwind information but no PDB procedure (compiler-builtins' assembly).
    let known: BTreeSet<u32> = procs.keys().copied().collect();
    for (&begin, &(end, bytes)) in &frames {
        let inside = procs
            .range(..=begin)
            .next_back()
            .is_some_and(|(&r, (_, len))| begin < r.saturating_add(*len));
        if !known.contains(&begin) && !inside {
            functions.push(Function {
                name: format!("<code at {begin:#x}>"),
                rva: begin,
                len: end.saturating_sub(begin),
                frame: bytes.saturating_add(8),
            });
        }
    }
    let bodies = decode(&functions, &code);

    let mut entries: Vec<(String, usize, bool)> = Vec::new();
    for name in SMALL_ENTRIES {
        match find(&functions, name).as_slice() {
            [i] => entries.push((name.into(), *i, false)),
            [] => return Err(format!("entry point {name} not found in the PDB")),
            many => {
                return Err(format!(
                    "entry point {name} is ambiguous: {} functions",
                    many.len()
                ))
            }
        }
    }
    let large = match find(&functions, LARGE_ENTRY).as_slice() {
        [i] => *i,
        _ => {
            return Err(format!(
                "entry point {LARGE_ENTRY} not found (once) in the PDB"
            ))
        }
    };
    entries.push((LARGE_ENTRY.into(), large, true));

    // Only the kernel calls the entry points; the closures `on_large_stack` hands the kernel are
    // called only by the callout, on the large stack.
    // What the callout calls: the closures `on_large_stack` hands the kernel, found as the methods
    // of the vtables (and the functions whose address) `on_large_stack` takes.
    let starts: HashMap<u32, usize> = functions
        .iter()
        .enumerate()
        .map(|(i, f)| (f.rva, i))
        .collect();
    let mut closures: BTreeSet<usize> = functions
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name.contains("on_large_stack::closure"))
        .map(|(i, _)| i)
        .collect();
    for (i, f) in functions.iter().enumerate() {
        let base = f.name.split('<').next().unwrap_or(&f.name);
        if base == "bulwark_driver::windows::ffi::on_large_stack" {
            if let Some(b) = bodies.get(i) {
                closures.extend(b.address_taken.iter().copied());
                for &d in &b.data_refs {
                    closures.extend(table_functions(&code, &starts, d).into_iter().map(|t| t.0));
                }
            }
        }
    }
    closures.remove(&large);
    if closures.is_empty() {
        return Err("found nothing on_large_stack hands the large-stack callout".into());
    }
    let mut policy = Policy {
        kernel_call_allowance: a.allowance,
        ..Policy::default()
    };
    policy.not_indirect_targets = entries.iter().map(|e| e.1).collect();

    // core's unstable sort (ipnsort) recurses into one side and loops on the other, at most
    // `2 * ilog2(len)` levels before it switches to heapsort: 64 levels for any length.
    // Its pivot choice recurses on an eighth of the slice each level (`median3_rec`, above 64
    // elements): at most 11 levels below 2^32 elements.
    // core::fmt calls through `&mut dyn fmt::Write` (write_str, write_char, write_fmt) and the
    // `fmt` functions of its arguments, nothing else: a name-based reading of the types at those
    // call sites, which the machine code no longer has.
    let formatting: BTreeSet<usize> = functions
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            let base = f.name.split('<').next().unwrap_or(&f.name);
            ["write_str", "write_char", "write_fmt", "fmt"]
                .iter()
                .any(|m| base.ends_with(&format!("::{m}")))
        })
        .map(|(i, _)| i)
        .collect();
    // The formatting functions themselves (every `Display`/`Debug` impl, `write_str`...) call
    // through the `Formatter` they are given: the same set.
    for (i, f) in functions.iter().enumerate() {
        let machinery = ["core::fmt::", "alloc::fmt::"]
            .iter()
            .any(|p| f.name.starts_with(p));
        if machinery || formatting.contains(&i) {
            policy.indirect_filter.insert(i, formatting.clone());
        }
    }
    for (i, f) in functions.iter().enumerate() {
        if PANIC_PATH.iter().any(|p| f.name.starts_with(p)) {
            policy.cut_cycles_through.insert(i);
        }
        for (prefix, levels) in BOUNDED_RECURSION {
            if f.name.starts_with(prefix) {
                policy.bounded_recursion.insert(i, levels);
            }
        }
    }

    // On the large stack the closures are what the callout (and any shim below it) calls; on a
    // lent stack nothing calls them.
    let mut large_policy = policy.clone();
    large_policy.taken_by.insert(large, closures.clone());
    policy.not_indirect_targets.extend(closures.iter().copied());

    println!(
        "stack budget: {} ({} functions, {} with unwind information, {} imports)",
        a.image,
        functions.len(),
        frames.len(),
        code.imports.len()
    );
    println!(
        "budgets: small {} bytes (callbacks, dispatch, DriverEntry, worker: a third of the 24 KiB \
         kernel stack), large {} bytes (of the 64 KiB expanded stack), each kernel call +{} bytes",
        a.small, a.large, a.allowance
    );
    println!(
        "indirect calls: may reach any function whose address the code reachable from the entry \
         takes, entry points excepted; the large-stack callout reaches the {} on_large_stack closures",
        closures.len()
    );
    let mut largest: Vec<&Function> = functions.iter().collect();
    largest.sort_by_key(|f| std::cmp::Reverse(f.frame));
    println!("largest frames:");
    for f in largest.iter().take(8) {
        println!("  {:>6}  {}", f.frame, f.name);
    }
    println!(
        "{:<22} {:<6} {:>8} {:>8}  result",
        "entry", "stack", "deepest", "budget"
    );
    let mut ok = true;
    for (name, i, is_large) in &entries {
        let budget = if *is_large { a.large } else { a.small };
        let this_policy = if *is_large { &large_policy } else { &policy };
        let d = deepest(&functions, &bodies, &code, *i, this_policy).map_err(|r| {
            let names: Vec<&str> = r
                .cycle
                .iter()
                .filter_map(|&i| functions.get(i).map(|f| f.name.as_str()))
                .collect();
            format!(
                "entry {name}: recursion, so no bound: {}",
                names.join(" -> ")
            )
        })?;
        let pass = d.bytes <= budget;
        ok &= pass;
        println!(
            "{:<22} {:<6} {:>8} {:>8}  {}  ({} functions, {} indirect call sites, {} possible indirect targets)",
            name,
            if *is_large { "large" } else { "small" },
            d.bytes,
            budget,
            if pass { "ok" } else { "OVER" },
            d.reachable,
            d.indirect_sites,
            d.indirect_targets
        );
        let mut line = String::from("    path:");
        for (f, by_pointer) in &d.path {
            if let Some(f) = functions.get(*f) {
                let short: String = f.name.chars().take(90).collect();
                line.push_str(&format!(
                    "\n      {}{} ({})",
                    if *by_pointer { "via pointer: " } else { "" },
                    short,
                    f.frame
                ));
            }
        }
        if let Some(k) = &d.kernel {
            line.push_str(&format!("\n      [kernel: {k}] (+{})", a.allowance));
        }
        println!("{line}");
        for c in &d.broken_cycles {
            let names: Vec<&str> = c
                .iter()
                .filter_map(|&i| functions.get(i).map(|f| f.name.as_str()))
                .collect();
            println!(
                "    note: a cycle through a pointer call was cut: {}",
                names.join(" -> ")
            );
        }
        if !pass {
            eprintln!("error: entry {name}: {} bytes > budget {budget}", d.bytes);
        }
    }
    Ok(ok)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("bulwark-stack-budget: {e}");
            ExitCode::from(2)
        }
    }
}
