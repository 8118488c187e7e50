//! `bulwark-stack-budget --image bulwark_driver.sys --pdb bulwark_driver.pdb [--budget-small N]
//! [--budget-large N] [--kernel-call-allowance N] [--top N] [--targets image|entry] [--verbose]`:
//! every entry point's deepest stack in the built driver, against its budget; exit 1 if one is
//! over (or recurses), 2 if the inputs cannot be read.
//!
//! The budgets (printed in the report's header too):
//! - **small: 8 KiB**, for what runs on a stack the kernel lends us: `DriverEntry`, the
//!   reinitialization routine, the worker thread, the process, image and registry callbacks, the
//!   dispatch routines and unload. An x64 kernel stack is 24 KiB (`KERNEL_STACK_SIZE`); a callback
//!   runs on the stack of whatever thread created the process, mapped the image or wrote the
//!   registry, below the system-call entry, the I/O manager, file-system filters and other
//!   security products' frames, so we take a third and leave two thirds to the kernel and the
//!   drivers around us.
//! - **large**, for `large_stack_callout`, which runs on the fresh stack
//!   `KeExpandKernelStackAndCallout` provides: its size is read from the image (the constant the
//!   code passes as the call's `Size`, `LARGE_STACK_BYTES` in driver/src/windows/ffi.rs: 64 KiB),
//!   less 8 KiB for the kernel's own frames on that stack (the callout's entry, and the kernel
//!   calls made inside beyond their allowance): 56 KiB. With no size readable it is 40 KiB (a
//!   48 KiB stack less 8).
//! - every call into the kernel (through the import table) is counted with an allowance for the
//!   kernel's frames below it (1 KiB; `--kernel-call-allowance`), within the budget. The stack
//!   probe `__chkstk` is not a kernel call: it is part of the prologue, on the frame being made.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::process::ExitCode;

use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, ImageThunkData, PeFile64};
use pdb::FallibleIterator;
use stack_budget::{
    decode, deepest, import_thunk, prologue, table_functions, unwind_bytes, Body, Code, Deepest,
    Function, Policy, Targets,
};

const SMALL_BUDGET: u64 = 8 * 1024;
/// What the kernel keeps of the expanded stack for itself.
const LARGE_RESERVE: u64 = 8 * 1024;
/// The large budget when the image's expansion size cannot be read: a 48 KiB stack less 8 KiB.
const LARGE_FALLBACK: u64 = 40 * 1024;
const KERNEL_ALLOWANCE: u32 = 1024;
const TOP: usize = 10;

/// Entry points on a lent stack: the functions the driver registers with the kernel
/// (driver/src/windows: `DriverEntry` is `driver_entry`, exported under that name).
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
/// The entry point on the expanded stack.
const LARGE_ENTRY: &str = "large_stack_callout";

/// Recursive functions of the standard library whose depth their own code bounds, and the bound.
const BOUNDED_RECURSION: [(&str, u32); 2] = [
    ("core::slice::sort::unstable::quicksort::quicksort<", 64),
    ("core::slice::sort::shared::pivot::median3_rec<", 11),
];

/// The panic path: a panic ends in `KeBugCheckEx` (wdk-panic), so cycles through it (a message
/// that could panic while formatted) are cut, not refused.
/// The methods of the driver core's `ControlPlane` trait (see `sensor_code`).
const CONTROL_PLANE_METHODS: [&str; 6] = [
    "stage",
    "confirm_healthy",
    "revert",
    "guard_status",
    "running_source",
    "take_events",
];

/// The crates a regex-automata search may call through a pointer (see `search_code`).
const SEARCH_CRATES: [&str; 3] = ["regex_automata::", "memchr::", "aho_corasick::"];

const PANIC_PATH: [&str; 4] = [
    "core::panicking::",
    "core::str::slice_error_fail",
    "core::slice::index::",
    "wdk_panic::",
];

struct Args {
    image: String,
    pdb: String,
    small: u64,
    large: Option<u64>,
    allowance: u32,
    top: usize,
    targets: Targets,
    verbose: bool,
}

const USAGE: &str = "usage: bulwark-stack-budget --image X.sys --pdb X.pdb [--budget-small BYTES] \
                     [--budget-large BYTES] [--kernel-call-allowance BYTES] [--top N] \
                     [--targets image|entry] [--verbose]";

fn args() -> Result<Args, String> {
    let mut a = Args {
        image: String::new(),
        pdb: String::new(),
        small: SMALL_BUDGET,
        large: None,
        allowance: KERNEL_ALLOWANCE,
        top: TOP,
        targets: Targets::Image,
        verbose: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--image" => a.image = value()?,
            "--pdb" => a.pdb = value()?,
            "--budget-small" => a.small = number(value()?)?,
            "--budget-large" => a.large = Some(number(value()?)?),
            "--kernel-call-allowance" => {
                a.allowance = u32::try_from(number(value()?)?).map_err(|e| e.to_string())?
            }
            "--top" => a.top = usize::try_from(number(value()?)?).map_err(|e| e.to_string())?,
            "--targets" => {
                a.targets = match value()?.as_str() {
                    "image" => Targets::Image,
                    "entry" => Targets::Entry,
                    other => return Err(format!("--targets {other}: image or entry")),
                }
            }
            "--verbose" | "-v" => a.verbose = true,
            "--help" | "-h" => return Err(USAGE.into()),
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    if a.image.is_empty() || a.pdb.is_empty() {
        return Err(USAGE.into());
    }
    Ok(a)
}

/// Each `.pdata` function: start RVA to (end RVA, bytes its unwind information allocates).
type Unwind = HashMap<u32, (u32, u32)>;

/// The image's code, imports, relocated pointers, and each `.pdata` function's frame.
fn read_image(data: &[u8]) -> Result<(Code, Unwind), String> {
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
    let mut unwind = HashMap::new();
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
            unwind.insert(begin, (end, bytes));
        }
    }
    Ok((
        Code {
            text_rva,
            text: text_bytes,
            imports,
            pointers,
        },
        unwind,
    ))
}

/// A procedure of the PDB.
struct Proc {
    name: String,
    len: u32,
    /// The frame its `S_FRAMEPROC` record describes: locals and outgoing arguments, saved
    /// registers, and the return address.
    frameproc: Option<u32>,
}

/// `S_FRAMEPROC`: { u16 kind, u32 frame, u32 padding, u32 padding offset, u32 saved registers,
/// ... } (the `pdb` crate reads the kind but not the record).
const S_FRAMEPROC: u16 = 0x1012;

fn frameproc(raw: &[u8]) -> Option<u32> {
    let word = |at: usize| -> Option<u32> {
        let b = raw.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([
            *b.first()?,
            *b.get(1)?,
            *b.get(2)?,
            *b.get(3)?,
        ]))
    };
    let frame = word(2)?;
    let saved = word(14)?;
    frame.checked_add(saved)?.checked_add(8)
}

/// Public code symbols: RVA to name.
type Publics = BTreeMap<u32, String>;

/// The PDB's procedures (RVA to procedure) and its public code symbols.
fn read_pdb(path: &str) -> Result<(BTreeMap<u32, Proc>, Publics), String> {
    let e = |e: pdb::Error| format!("{path}: {e}");
    let file = std::fs::File::open(path).map_err(|x| format!("{path}: {x}"))?;
    let mut pdb = pdb::PDB::open(file).map_err(e)?;
    let map = pdb.address_map().map_err(e)?;
    let dbi = pdb.debug_information().map_err(e)?;
    let mut modules = dbi.modules().map_err(e)?;
    let mut procs: BTreeMap<u32, Proc> = BTreeMap::new();
    while let Some(module) = modules.next().map_err(e)? {
        let Some(info) = pdb.module_info(&module).map_err(e)? else {
            continue;
        };
        let mut symbols = info.symbols().map_err(e)?;
        // The procedure whose records follow (S_FRAMEPROC comes right after its S_GPROC32).
        let mut current: Option<u32> = None;
        while let Some(symbol) = symbols.next().map_err(e)? {
            if symbol.raw_kind() == S_FRAMEPROC {
                if let Some(p) = current.take().and_then(|rva| procs.get_mut(&rva)) {
                    p.frameproc = p.frameproc.or(frameproc(symbol.raw_bytes()));
                }
                continue;
            }
            if let Ok(pdb::SymbolData::Procedure(p)) = symbol.parse() {
                current = None;
                if let Some(rva) = p.offset.to_rva(&map) {
                    current = Some(rva.0);
                    procs.entry(rva.0).or_insert_with(|| Proc {
                        name: p.name.to_string().into_owned(),
                        len: p.len,
                        frameproc: None,
                    });
                }
            }
        }
    }
    let mut publics = BTreeMap::new();
    let globals = pdb.global_symbols().map_err(e)?;
    let mut symbols = globals.iter();
    while let Some(symbol) = symbols.next().map_err(e)? {
        if let Ok(pdb::SymbolData::Public(p)) = symbol.parse() {
            if p.code || p.function {
                if let Some(rva) = p.offset.to_rva(&map) {
                    publics
                        .entry(rva.0)
                        .or_insert_with(|| p.name.to_string().into_owned());
                }
            }
        }
    }
    Ok((procs, publics))
}

/// The functions of the Windows layer (`bulwark_driver::windows`, where every routine the kernel
/// calls is) whose name's last path component is `name` (generic arguments ignored).
fn find(functions: &[Function], name: &str) -> Vec<usize> {
    functions
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            f.name.starts_with("bulwark_driver::windows::") && last_component(&f.name) == name
        })
        .map(|(i, _)| i)
        .collect()
}

/// `a::b::c<T>` without its generic arguments: `a::b::c`.
fn without_generics(name: &str) -> String {
    let mut depth = 0u32;
    let mut out = String::new();
    for c in name.chars() {
        match c {
            '<' => depth = depth.saturating_add(1),
            '>' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn last_component(name: &str) -> String {
    let base = without_generics(name);
    base.rsplit("::").next().unwrap_or(&base).to_string()
}

/// A name short enough for a table: its last two path components, without generic arguments.
fn short(name: &str) -> String {
    let base = without_generics(name);
    let parts: Vec<&str> = base.split("::").collect();
    parts
        .get(parts.len().saturating_sub(2)..)
        .unwrap_or(&[])
        .join("::")
}

/// 12345 as "12,345".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A path as `a (48) -> *b (64) -> [kernel X +1,024]` (`*`: reached through a pointer call).
fn path_line(functions: &[Function], d: &Deepest, allowance: u32, full: bool) -> String {
    let mut steps: Vec<String> = d
        .path
        .iter()
        .filter_map(|&(f, by_pointer)| {
            let f = functions.get(f)?;
            let name = if full { f.name.clone() } else { short(&f.name) };
            Some(format!(
                "{}{name} ({})",
                if by_pointer { "*" } else { "" },
                thousands(u64::from(f.frame))
            ))
        })
        .collect();
    if let Some(k) = &d.kernel {
        steps.push(format!("[kernel {k} +{}]", thousands(u64::from(allowance))));
    }
    steps.join(" -> ")
}

/// The frame sources of one function, for the cross-check.
struct FrameSources {
    unwind: Option<u32>,
    prologue: u32,
    frameproc: Option<u32>,
}

impl FrameSources {
    fn frame(&self) -> u32 {
        self.unwind
            .unwrap_or(8)
            .max(self.prologue)
            .max(self.frameproc.unwrap_or(0))
    }
    fn agree(&self) -> bool {
        let f = self.frame();
        self.unwind.unwrap_or(8) == f && self.prologue == f && self.frameproc.is_none_or(|x| x == f)
    }
}

fn run() -> Result<bool, String> {
    let a = args()?;
    let data = std::fs::read(&a.image).map_err(|e| format!("{}: {e}", a.image))?;
    let (code, unwind) = read_image(&data)?;
    let (procs, publics) = read_pdb(&a.pdb)?;

    // The functions: the PDB's procedures; code with unwind information but no procedure
    // (compiler-builtins' assembly), named by its public symbol; public code symbols outside
    // both (leaves), up to the next function.
    let mut spans: BTreeMap<u32, (String, u32)> = procs
        .iter()
        .map(|(&rva, p)| (rva, (p.name.clone(), p.len)))
        .collect();
    let inside = |spans: &BTreeMap<u32, (String, u32)>, at: u32| {
        spans
            .range(..=at)
            .next_back()
            .is_some_and(|(&r, (_, len))| at < r.saturating_add(*len))
    };
    for (&begin, &(end, _)) in &unwind {
        if !inside(&spans, begin) {
            let name = publics
                .get(&begin)
                .cloned()
                .unwrap_or_else(|| format!("<code at {begin:#x}>"));
            spans.insert(begin, (name, end.saturating_sub(begin)));
        }
    }
    let text_end = code
        .text_rva
        .saturating_add(u32::try_from(code.text.len()).unwrap_or(u32::MAX));
    let leaves: Vec<(u32, String)> = publics
        .iter()
        .filter(|(&rva, _)| {
            rva >= code.text_rva
                && rva < text_end
                && !inside(&spans, rva)
                && import_thunk(&code, rva).is_none()
        })
        .map(|(&rva, name)| (rva, name.clone()))
        .collect();
    for (rva, name) in leaves {
        let next = spans.range(rva..).next().map_or(text_end, |(&r, _)| r);
        spans.insert(rva, (name, next.saturating_sub(rva).min(4096)));
    }
    let make = |spans: &BTreeMap<u32, (String, u32)>| {
        let mut sources = Vec::new();
        let mut functions: Vec<Function> = Vec::new();
        for (&rva, (name, len)) in spans {
            let s = FrameSources {
                unwind: unwind.get(&rva).map(|u| u.1.saturating_add(8)),
                prologue: prologue(&code, rva, *len).frame(),
                frameproc: procs.get(&rva).and_then(|p| p.frameproc),
            };
            functions.push(Function {
                name: name.clone(),
                rva,
                len: *len,
                frame: s.frame(),
            });
            sources.push(s);
        }
        let bodies = decode(&functions, &code);
        (functions, sources, bodies)
    };
    let (mut functions, mut sources, mut bodies) = make(&spans);
    // Code called directly that no symbol names (stubs without debug information): a function
    // up to the next one (its frame from its prologue; no unwind information: a leaf).
    let unnamed: BTreeSet<u32> = bodies
        .iter()
        .flat_map(|b| b.unknown_calls.iter().copied())
        .filter(|&t| t >= code.text_rva && t < text_end && !inside(&spans, t))
        .collect();
    if !unnamed.is_empty() {
        for &rva in &unnamed {
            let next = spans.range(rva..).next().map_or(text_end, |(&r, _)| r);
            spans.insert(
                rva,
                (
                    format!("<code at {rva:#x}>"),
                    next.saturating_sub(rva).min(4096),
                ),
            );
        }
        (functions, sources, bodies) = make(&spans);
    }

    // Entry points.
    let mut entries: Vec<(&str, usize, bool)> = Vec::new();
    for (name, large) in SMALL_ENTRIES
        .iter()
        .map(|n| (*n, false))
        .chain([(LARGE_ENTRY, true)])
    {
        match find(&functions, name).as_slice() {
            [i] => entries.push((name, *i, large)),
            [] => return Err(format!("entry point {name} not found in the PDB")),
            many => {
                let names: Vec<&str> = many
                    .iter()
                    .filter_map(|&i| functions.get(i).map(|f| f.name.as_str()))
                    .collect();
                return Err(format!(
                    "entry point {name} is ambiguous: {}",
                    names.join(", ")
                ));
            }
        }
    }
    let large = entries.last().map_or(0, |e| e.1);

    // The expanded stack's size: the constant each KeExpandKernelStackAndCallout call passes.
    let expansions: Vec<Option<u64>> = bodies
        .iter()
        .flat_map(|b| b.stack_expansions.iter().copied())
        .collect();
    let sizes: BTreeSet<u64> = expansions.iter().flatten().copied().collect();
    let expanded = sizes.first().copied();
    let large_budget = a.large.unwrap_or(match expanded {
        Some(s) if !expansions.contains(&None) => s.saturating_sub(LARGE_RESERVE),
        _ => LARGE_FALLBACK,
    });

    // Only the kernel calls the entry points. What the callout calls: the closures
    // `on_large_stack` hands the kernel, found by name and as the methods of the vtables (and the
    // functions whose address) `on_large_stack` takes; only on the large stack.
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
        if without_generics(&f.name) == "bulwark_driver::windows::ffi::on_large_stack" {
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
        targets: a.targets,
        kernel_call_allowance: a.allowance,
        ..Policy::default()
    };
    policy.not_indirect_targets = entries.iter().map(|e| e.1).collect();
    // core::fmt calls through `&mut dyn fmt::Write` (write_str, write_char, write_fmt) and the
    // `fmt` functions of its arguments, nothing else: a name-based reading of the types at those
    // call sites, which the machine code no longer has.
    let formatting: BTreeSet<usize> = functions
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            let base = without_generics(&f.name);
            ["write_str", "write_char", "write_fmt", "fmt"]
                .iter()
                .any(|m| base.ends_with(&format!("::{m}")))
        })
        .map(|(i, _)| i)
        .collect();
    // A formatting function's address taken as a plain pointer is an `fmt::Argument`'s
    // formatter: only core::fmt calls it (a `dyn Display`/`dyn Write` call reaches the same
    // functions through their vtable slots instead, from anywhere).
    let machinery: BTreeSet<usize> = functions
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            ["core::fmt::", "alloc::fmt::"]
                .iter()
                .any(|p| f.name.starts_with(p))
        })
        .map(|(i, _)| i)
        .collect();
    for &i in &formatting {
        policy.pointer_callers.insert(i, machinery.clone());
    }
    // The formatting functions themselves (every `Display`/`Debug` impl, `write_str`...) call
    // through the `Formatter` they are given: the same set.
    for (i, f) in functions.iter().enumerate() {
        let machinery = machinery.contains(&i);
        if machinery || formatting.contains(&i) {
            policy.indirect_filter.insert(i, formatting.clone());
        }
        if PANIC_PATH.iter().any(|p| f.name.starts_with(p)) {
            policy.cut_cycles_through.insert(i);
        }
        for (prefix, levels) in BOUNDED_RECURSION {
            if f.name.starts_with(prefix) {
                policy.bounded_recursion.insert(i, levels);
            }
        }
    }

    // regex-automata calls through pointers only into its own code (its prefilters, `dyn
    // PrefilterI`), the searchers below them (memchr, aho-corasick) and the formatting machinery:
    // its vtable calls read slots that other traits' vtables also have (a `dyn ControlPlane`
    // method in the same slot is not reachable from a DFA search).
    let search_code: BTreeSet<usize> = functions
        .iter()
        .enumerate()
        .filter(|(i, f)| {
            SEARCH_CRATES.iter().any(|c| f.name.starts_with(c)) || formatting.contains(i)
        })
        .map(|(i, _)| i)
        .collect();
    for (i, f) in functions.iter().enumerate() {
        if f.name.starts_with("regex_automata::") {
            policy.indirect_filter.insert(i, search_code.clone());
        }
    }
    // The control plane's methods (`dyn ControlPlane`: stage, revert, confirm...) are called
    // through a pointer by the sensor's request handling only (on the large stack, for the
    // IOCTLs), never by an evaluation's pointer calls that read the same vtable slot.
    let sensor_code: BTreeSet<usize> = functions
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name.starts_with("bulwark_driver_core::sensor::"))
        .map(|(i, _)| i)
        .collect();
    for (i, f) in functions.iter().enumerate() {
        let base = without_generics(&f.name);
        if base.starts_with("bulwark_driver_core::control::")
            && CONTROL_PLANE_METHODS
                .iter()
                .any(|m| base.ends_with(&format!("::{m}")))
        {
            policy.only_from.insert(i, sensor_code.clone());
        }
    }

    // On the large stack the closures are what the callout (and any shim below it) calls; on a
    // lent stack nothing calls them.
    // The callout calls them, itself or through a shim it calls directly (debug builds): the
    // functions the callout reaches by direct calls, closures excepted.
    let mut shim: BTreeSet<usize> = BTreeSet::new();
    let mut todo = vec![large];
    while let Some(f) = todo.pop() {
        if closures.contains(&f) || !shim.insert(f) {
            continue;
        }
        if let Some(b) = bodies.get(f) {
            todo.extend(b.calls.iter().chain(&b.tail_calls).copied());
        }
    }
    let mut large_policy = policy.clone();
    large_policy.taken_by.insert(large, closures.clone());
    for &c in &closures {
        large_policy.only_from.insert(c, shim.clone());
    }
    policy.not_indirect_targets.extend(closures.iter().copied());

    // The header.
    let image_name = std::path::Path::new(&a.image)
        .file_name()
        .map_or(a.image.clone(), |n| n.to_string_lossy().into_owned());
    let with_frameproc = sources.iter().filter(|s| s.frameproc.is_some()).count();
    let disagree: Vec<usize> = (0..functions.len())
        .filter(|&i| sources.get(i).is_some_and(|s| !s.agree()))
        .collect();
    println!(
        "stack budget: {image_name} ({} functions, {} entry points; {} with unwind information, \
         {with_frameproc} with S_FRAMEPROC; {} imports)",
        functions.len(),
        entries.len(),
        unwind.len(),
        code.imports.len()
    );
    let expanded_text = match (expanded, a.large) {
        (_, Some(_)) => "set by --budget-large".to_string(),
        (Some(s), None) if !expansions.contains(&None) => format!(
            "the {} KiB stack the image asks KeExpandKernelStackAndCallout for, less {} KiB for \
             the kernel",
            s / 1024,
            LARGE_RESERVE / 1024
        ),
        _ => format!(
            "the image's KeExpandKernelStackAndCallout size could not be read: a 48 KiB stack \
             less {} KiB",
            LARGE_RESERVE / 1024
        ),
    };
    println!(
        "budgets: small {} bytes (DriverEntry, reinitialize, worker, callbacks, dispatch, unload: \
         a third of the 24 KiB x64 kernel stack, shared with the kernel and the drivers above \
         us), large {} bytes ({LARGE_ENTRY}: {expanded_text}); each kernel call +{} bytes",
        thousands(a.small),
        thousands(large_budget),
        thousands(u64::from(a.allowance))
    );
    if let (Some(s), Some(b)) = (expanded, a.large) {
        if b > s {
            println!(
                "warning: --budget-large {} is more than the {}-byte stack the image expands to",
                thousands(b),
                thousands(s)
            );
        }
    }
    println!(
        "frames: the largest of the unwind information (.pdata), the decoded prologue and \
         S_FRAMEPROC, return address included; {} functions' sources disagree{}",
        disagree.len(),
        if a.verbose {
            ":"
        } else {
            " (--verbose lists them)"
        }
    );
    if a.verbose {
        for &i in &disagree {
            if let (Some(f), Some(s)) = (functions.get(i), sources.get(i)) {
                println!(
                    "  {:>7}  unwind {:>7}  prologue {:>7}  S_FRAMEPROC {:>7}  {}",
                    f.frame,
                    s.unwind.map_or("-".into(), |x| x.to_string()),
                    s.prologue,
                    s.frameproc.map_or("-".into(), |x| x.to_string()),
                    f.name
                );
            }
        }
    }
    let sites: u32 = bodies
        .iter()
        .map(|b| b.indirect_calls.saturating_add(b.indirect_tail_calls))
        .fold(0, u32::saturating_add);
    let unverified: u32 = bodies
        .iter()
        .map(|b| b.unverified_tail_jumps)
        .fold(0, u32::saturating_add);
    println!(
        "indirect calls: {sites} sites in the image, each resolved conservatively to {}, in the \
         vtable slot the call reads where known; never to an entry point; the {} closures \
         on_large_stack hands the kernel only on the large stack. Jumps to another function: tail calls after an \
         epilogue, {unverified} others counted as calls",
        match a.targets {
            Targets::Image => "every function whose address the image takes (code or data)",
            Targets::Entry => "the functions whose address the entry's own code takes (--targets entry)",
        },
        closures.len()
    );
    let unknown: BTreeSet<u32> = bodies
        .iter()
        .flat_map(|b| b.unknown_calls.iter().copied())
        .collect();
    if !unknown.is_empty() {
        let list: Vec<String> = unknown.iter().map(|r| format!("{r:#x}")).collect();
        println!(
            "warning: {} call targets start no known function (not counted): {}",
            unknown.len(),
            list.join(", ")
        );
    }
    println!("entries:");
    for (name, i, _) in &entries {
        if let Some(f) = functions.get(*i) {
            let export = publics
                .get(&f.rva)
                .filter(|p| p.as_str() != f.name && !p.contains("::"))
                .map(|p| format!(", public {p}"))
                .unwrap_or_default();
            println!("  {name:<22} = {} at {:#x}{export}", f.name, f.rva);
        }
    }
    let mut largest: Vec<&Function> = functions.iter().collect();
    largest.sort_by_key(|f| std::cmp::Reverse(f.frame));
    println!("largest frames:");
    for f in largest.iter().take(a.top) {
        println!("  {:>7}  {}", thousands(u64::from(f.frame)), f.name);
    }

    // The table.
    println!();
    println!(
        "{:<22} {:<5} {:>8} {:>8}  {:<4}  path (* = through a pointer call)",
        "entry", "kind", "deepest", "budget", "ok"
    );
    let mut ok = true;
    let mut errors = Vec::new();
    let mut details = String::new();
    for (name, i, is_large) in &entries {
        let budget = if *is_large { large_budget } else { a.small };
        let kind = if *is_large { "large" } else { "small" };
        let this_policy = if *is_large { &large_policy } else { &policy };
        let d = match deepest(&functions, &bodies, &code, *i, this_policy) {
            Ok(d) => d,
            Err(r) => {
                let names: Vec<String> = r
                    .cycle
                    .iter()
                    .chain(r.cycle.first())
                    .filter_map(|&i| functions.get(i).map(|f| f.name.clone()))
                    .collect();
                println!(
                    "{name:<22} {kind:<5} {:>8} {:>8}  {:<4}  recursion: {}",
                    "-",
                    thousands(budget),
                    "NO",
                    names.join(" -> ")
                );
                errors.push(format!(
                    "entry {name}: recursion through direct calls, so no bound: {}",
                    names.join(" -> ")
                ));
                ok = false;
                continue;
            }
        };
        let pass = d.bytes <= budget;
        ok &= pass;
        println!(
            "{name:<22} {kind:<5} {:>8} {:>8}  {:<4}  {}",
            thousands(d.bytes),
            thousands(budget),
            if pass { "ok" } else { "OVER" },
            path_line(&functions, &d, a.allowance, false)
        );
        if !pass {
            errors.push(format!(
                "entry {name}: {} bytes > budget {}: path {}",
                thousands(d.bytes),
                thousands(budget),
                path_line(&functions, &d, a.allowance, false)
            ));
        }
        details.push_str(&describe(name, &functions, &bodies, &d, &a));
    }
    println!();
    print!("{details}");
    for e in &errors {
        eprintln!("error: {e}");
    }
    Ok(ok)
}

/// One entry's deepest path in full, the indirect calls on it and the cycles cut.
fn describe(name: &str, functions: &[Function], bodies: &[Body], d: &Deepest, a: &Args) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{name}: {} bytes; {} functions reachable, {} indirect call sites among them ({} possible \
         targets)",
        thousands(d.bytes),
        d.reachable,
        d.indirect_sites,
        d.indirect_targets
    );
    for (k, &(f, by_pointer)) in d.path.iter().enumerate() {
        let Some(func) = functions.get(f) else {
            continue;
        };
        let _ = writeln!(
            out,
            "  {:>7}  {}{}",
            thousands(u64::from(func.frame)),
            if by_pointer { "via pointer: " } else { "" },
            func.name
        );
        if let (Some(b), Some(targets)) = (bodies.get(f), d.site_targets.get(&f)) {
            let slots: Vec<String> = b
                .indirect_slots
                .iter()
                .map(|s| s.map_or("any".into(), |x| x.to_string()))
                .collect();
            let _ = writeln!(
                out,
                "           (indirect: {} call sites, slots {}, {targets} possible targets)",
                b.indirect_calls.saturating_add(b.indirect_tail_calls),
                slots.join(", ")
            );
        }
        for (at, group) in &d.cycles_on_path {
            if *at == k {
                let _ = writeln!(
                    out,
                    "           (in a cycle of {} through pointer calls or the panic path, cut)",
                    match group.len() {
                        1 => "1 function (itself)".to_string(),
                        n => format!("{n} functions"),
                    }
                );
            }
        }
    }
    if let Some(k) = &d.kernel {
        let _ = writeln!(
            out,
            "  {:>7}  [kernel: {k}]",
            format!("+{}", thousands(u64::from(a.allowance)))
        );
    }
    if !d.broken_cycles.is_empty() {
        let largest = d.broken_cycles.iter().map(Vec::len).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "  warning: {} cycles through pointer calls or the panic path (largest: {largest} \
             functions) were cut: a call back into a function already on the path is not \
             followed{}",
            d.broken_cycles.len(),
            if a.verbose {
                ":"
            } else {
                " (--verbose lists them)"
            }
        );
        if a.verbose {
            for c in &d.broken_cycles {
                let names: Vec<String> = c
                    .iter()
                    .filter_map(|&i| functions.get(i).map(|f| short(&f.name)))
                    .collect();
                let _ = writeln!(out, "    {}", names.join(", "));
            }
        }
    }
    out
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
