//! The kernel-stack budget of Bulwark's driver, computed from the built image.
//!
//! An x64 kernel thread has a 24 KiB stack (`KERNEL_STACK_SIZE`), of which the kernel and every
//! driver above ours in the call chain take their part; overflowing it is a bugcheck
//! (`UNEXPECTED_KERNEL_MODE_TRAP` with a double fault), and Wine, whose threads have 1 MiB stacks,
//! never shows it. This crate computes, from the .sys and its PDB:
//!
//! - each function's **frame**, from its x64 unwind information (`.pdata`/`.xdata`: every push,
//!   every stack allocation, chained unwind information followed), plus the return address; a
//!   function without unwind information is a leaf that moves no stack pointer: 8 bytes;
//! - its **calls**, by decoding every instruction (iced-x86): direct calls, tail jumps to other
//!   functions, calls into the import address table (kernel calls: a fixed allowance each, for
//!   the kernel's own frames below ours), and indirect calls;
//! - the **deepest path** from each entry point, with indirect calls resolved conservatively
//!   (see [`deepest`]): a call through a pointer may reach any function whose address the code
//!   reachable from that entry takes (an `lea` of the function, or a vtable it references), except
//!   the entry points themselves, which only the kernel calls.
//!
//! Recursion makes a path unbounded: a cycle of direct calls fails the check.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, OpKind};

/// One function of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// Its name (the PDB's, demangled by the compiler).
    pub name: String,
    /// Where it starts.
    pub rva: u32,
    /// Its length in bytes.
    pub len: u32,
    /// Its frame in bytes, return address included.
    pub frame: u32,
}

/// The parts of the image the analysis reads.
#[derive(Debug, Clone, Default)]
pub struct Code {
    /// The RVA of `text`.
    pub text_rva: u32,
    /// The executable section's bytes.
    pub text: Vec<u8>,
    /// Import address table slots: slot RVA to the imported function's name.
    pub imports: HashMap<u32, String>,
    /// Pointer-sized slots the loader relocates (base relocations): slot RVA to the RVA stored
    /// there. Vtables are found here.
    pub pointers: BTreeMap<u32, u32>,
}

/// What decoding one function found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    /// Functions called directly (indices).
    pub calls: BTreeSet<usize>,
    /// Functions jumped to as a tail call (their frame replaces this one's).
    pub tail_calls: BTreeSet<usize>,
    /// Kernel functions called through the import address table.
    pub imports: BTreeSet<String>,
    /// Calls through a register or a pointer that is not an import.
    pub indirect_calls: u32,
    /// Tail jumps through a pointer in memory (`jmp [rax+0x20]`: a virtual call made last).
    pub indirect_tail_calls: u32,
    /// Jumps through a register (`jmp rax`): jump tables within the function.
    pub register_jumps: u32,
    /// The vtable slots the indirect calls and tail calls read (`call [rax+0x18]`: slot 3), or
    /// `None` for a call through a register or any other operand, which may reach any slot.
    pub indirect_slots: BTreeSet<Option<u32>>,
    /// Functions whose address this one takes (an `lea` or `mov` of the function's start).
    pub address_taken: BTreeSet<usize>,
    /// Data this function references by address (vtables are looked for there).
    pub data_refs: BTreeSet<u32>,
    /// Direct calls to addresses that start no known function.
    pub unknown_calls: BTreeSet<u32>,
}

/// Decodes every function's instructions.
pub fn decode(functions: &[Function], code: &Code) -> Vec<Body> {
    let starts: HashMap<u32, usize> = functions
        .iter()
        .enumerate()
        .map(|(i, f)| (f.rva, i))
        .collect();
    let text_end = code
        .text_rva
        .saturating_add(u32::try_from(code.text.len()).unwrap_or(u32::MAX));
    functions
        .iter()
        .map(|f| {
            let mut body = Body::default();
            let from = f.rva.saturating_sub(code.text_rva) as usize;
            let to = from.saturating_add(f.len as usize).min(code.text.len());
            let Some(bytes) = code.text.get(from..to) else {
                return body;
            };
            let end = f.rva.saturating_add(f.len);
            let mut decoder = Decoder::with_ip(64, bytes, u64::from(f.rva), DecoderOptions::NONE);
            let mut ins = Instruction::default();
            while decoder.can_decode() {
                decoder.decode_out(&mut ins);
                if ins.is_invalid() {
                    continue;
                }
                let memory = ins
                    .is_ip_rel_memory_operand()
                    .then(|| ins.ip_rel_memory_address() as u32);
                match ins.flow_control() {
                    FlowControl::Call | FlowControl::IndirectCall => {
                        if ins.op0_kind() == OpKind::NearBranch64 {
                            let target = ins.near_branch64() as u32;
                            match (starts.get(&target), import_thunk(code, target)) {
                                (Some(&i), _) => {
                                    body.calls.insert(i);
                                }
                                (None, Some(name)) => {
                                    body.imports.insert(name);
                                }
                                (None, None) => {
                                    body.unknown_calls.insert(target);
                                }
                            }
                        } else if let Some(name) = memory.and_then(|m| code.imports.get(&m)) {
                            body.imports.insert(name.clone());
                        } else if let Some(&i) = memory
                            .and_then(|m| code.pointers.get(&m))
                            .and_then(|t| starts.get(t))
                        {
                            // A call through a relocated constant pointer: its one target.
                            body.calls.insert(i);
                        } else {
                            body.indirect_calls = body.indirect_calls.saturating_add(1);
                            body.indirect_slots.insert(vtable_slot(&ins));
                        }
                        continue;
                    }
                    FlowControl::UnconditionalBranch => {
                        if ins.op0_kind() == OpKind::NearBranch64 {
                            let target = ins.near_branch64() as u32;
                            if target < f.rva || target >= end {
                                if let Some(&i) = starts.get(&target) {
                                    body.tail_calls.insert(i);
                                } else if let Some(name) = import_thunk(code, target) {
                                    body.imports.insert(name);
                                }
                            }
                        }
                        continue;
                    }
                    FlowControl::IndirectBranch => {
                        if let Some(name) = memory.and_then(|m| code.imports.get(&m)) {
                            body.imports.insert(name.clone());
                        } else if ins.op0_kind() == OpKind::Memory {
                            body.indirect_tail_calls = body.indirect_tail_calls.saturating_add(1);
                            body.indirect_slots.insert(vtable_slot(&ins));
                        } else {
                            body.register_jumps = body.register_jumps.saturating_add(1);
                        }
                        continue;
                    }
                    _ => {}
                }
                if let Some(m) = memory {
                    if let Some(&i) = starts.get(&m) {
                        body.address_taken.insert(i);
                    } else if (m < code.text_rva || m >= text_end) && !code.imports.contains_key(&m)
                    {
                        body.data_refs.insert(m);
                    }
                }
            }
            body
        })
        .collect()
}

/// The vtable slot a `call [reg+disp]` reads: `disp / 8`, when the operand is a base register
/// and a multiple of 8 below 64 slots; otherwise `None` (any slot).
fn vtable_slot(ins: &Instruction) -> Option<u32> {
    use iced_x86::Register;
    if ins.op0_kind() != OpKind::Memory
        || ins.memory_base() == Register::None
        || ins.memory_base() == Register::RIP
        || ins.memory_index() != Register::None
    {
        return None;
    }
    let disp = ins.memory_displacement64();
    (disp % 8 == 0 && disp < 64 * 8).then_some((disp / 8) as u32)
}

/// The import a linker thunk at `rva` jumps to (`jmp [rip+__imp_X]`), if it is one.
pub fn import_thunk(code: &Code, rva: u32) -> Option<String> {
    let from = rva.checked_sub(code.text_rva)? as usize;
    let bytes = code
        .text
        .get(from..from.saturating_add(16).min(code.text.len()))?;
    let mut decoder = Decoder::with_ip(64, bytes, u64::from(rva), DecoderOptions::NONE);
    let ins = decoder.decode();
    if ins.flow_control() == FlowControl::IndirectBranch && ins.is_ip_rel_memory_operand() {
        return code
            .imports
            .get(&(ins.ip_rel_memory_address() as u32))
            .cloned();
    }
    None
}

/// The functions a vtable (or any table of pointers) at `addr` holds: relocated slots from
/// `addr` on that point at function starts. A Rust vtable is `[drop_in_place, size, align,
/// methods...]`: the size and align slots are plain numbers, so the scan goes on past slots 1
/// and 2 and stops at the first later slot that is not a relocated pointer.
pub fn table_functions(code: &Code, starts: &HashMap<u32, usize>, addr: u32) -> Vec<(usize, u32)> {
    let mut out = Vec::new();
    for slot in 0u32..64 {
        let at = addr.saturating_add(slot.saturating_mul(8));
        match code.pointers.get(&at) {
            Some(target) => {
                if let Some(&i) = starts.get(target) {
                    out.push((i, slot));
                }
            }
            None if slot <= 2 => {}
            None => break,
        }
    }
    out
}

/// How calls the decoder cannot follow are counted.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Bytes allowed for a kernel function called through the import table (its own frames).
    pub kernel_call_allowance: u32,
    /// Functions an indirect call never reaches (the entry points: only the kernel calls them;
    /// and closures only a separate stack's callout calls).
    pub not_indirect_targets: BTreeSet<usize>,
    /// Functions whose indirect calls reach exactly these targets (the large-stack callout, which
    /// calls the closures `on_large_stack` hands it).
    pub indirect_targets_of: HashMap<usize, BTreeSet<usize>>,
    /// Functions that call themselves at most this many levels deep (a recursion bounded by its
    /// own code, such as the standard library's quicksort, whose depth limit is twice the base-2
    /// logarithm of the length): counted as that many frames.
    pub bounded_recursion: HashMap<usize, u32>,
    /// Functions a cycle through which is cut (and reported) rather than refused: the panic path,
    /// where formatting a message can in principle panic again but the first panic ends in
    /// `KeBugCheckEx` (wdk-panic), so the machine stops there whatever the stack.
    pub cut_cycles_through: BTreeSet<usize>,
    /// Functions whose indirect calls can only reach functions of this set (whatever else the
    /// address-taking rule allows): the formatting machinery, which calls only through
    /// `&mut dyn fmt::Write` and the formatting functions of its arguments.
    pub indirect_filter: HashMap<usize, BTreeSet<usize>>,
    /// Functions counted as taking the address of these (so the pointer calls below them may
    /// reach them): the large-stack callout, for the closures `on_large_stack` hands the kernel.
    pub taken_by: HashMap<usize, BTreeSet<usize>>,
}

/// The deepest path from one entry point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deepest {
    /// Stack bytes at the deepest point, return addresses and the kernel allowance included.
    pub bytes: u64,
    /// The functions on the path, outermost first, and whether each was reached by an indirect
    /// call.
    pub path: Vec<(usize, bool)>,
    /// The kernel function the path ends in, if it does.
    pub kernel: Option<String>,
    /// Functions reachable from the entry.
    pub reachable: usize,
    /// Indirect call sites reachable from the entry, and how many targets each may reach.
    pub indirect_sites: u32,
    /// How many functions an indirect call from this entry may reach.
    pub indirect_targets: usize,
    /// Cycles through indirect edges, broken (a direct cycle is an error instead).
    pub broken_cycles: Vec<Vec<usize>>,
}

/// Why no bound exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recursion {
    /// The functions of the cycle.
    pub cycle: Vec<usize>,
}

struct Graph<'a> {
    functions: &'a [Function],
    bodies: &'a [Body],
    /// What each function's indirect calls may reach.
    indirect: HashMap<usize, BTreeSet<usize>>,
    policy: &'a Policy,
}

impl Graph<'_> {
    /// Edges from `f`: (target, by an indirect call, as a tail call).
    fn edges(&self, f: usize) -> Vec<(usize, bool, bool)> {
        let Some(body) = self.bodies.get(f) else {
            return Vec::new();
        };
        let mut out: Vec<(usize, bool, bool)> =
            body.calls.iter().map(|&g| (g, false, false)).collect();
        out.extend(body.tail_calls.iter().map(|&g| (g, false, true)));
        let none = BTreeSet::new();
        let targets = self
            .policy
            .indirect_targets_of
            .get(&f)
            .or_else(|| self.indirect.get(&f))
            .unwrap_or(&none);
        if body.indirect_calls > 0 {
            out.extend(targets.iter().map(|&g| (g, true, false)));
        }
        if body.indirect_tail_calls > 0 {
            out.extend(targets.iter().map(|&g| (g, true, true)));
        }
        out
    }
}

/// A function's deepest stack: bytes, the next function on the path (and whether by a pointer
/// call), and the kernel function the path ends in.
type Best = (u64, Option<(usize, bool)>, Option<String>);

/// The deepest stack from `entry`.
///
/// Indirect calls: a function's address is taken where the code materialises it (an `lea` of its
/// start, or a vtable slot, the vtable referenced by an `lea`). A trait object or function pointer
/// made in function F is passed down to F's callees, or returned to F's caller and passed down from
/// there; so an indirect call in G may reach what F takes if G is below F or below one of F's
/// callers. This is computed to a fixed point (new edges make more code reachable), minus
/// [`Policy::not_indirect_targets`]; a function listed in [`Policy::indirect_targets_of`] reaches
/// exactly its list. (A pointer stored in a global and called from elsewhere would escape this
/// reading; the driver's globals hold no trait objects or function pointers it calls.)
pub fn deepest(
    functions: &[Function],
    bodies: &[Body],
    code: &Code,
    entry: usize,
    policy: &Policy,
) -> Result<Deepest, Recursion> {
    let starts: HashMap<u32, usize> = functions
        .iter()
        .enumerate()
        .map(|(i, f)| (f.rva, i))
        .collect();
    // Reachable functions and address-taken functions, to a fixed point.
    let mut graph = Graph {
        functions,
        bodies,
        indirect: HashMap::new(),
        policy,
    };
    let below = |graph: &Graph<'_>, seeds: &[usize]| -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = seeds.to_vec();
        while let Some(f) = stack.pop() {
            if !seen.insert(f) {
                continue;
            }
            for (g, _, _) in graph.edges(f) {
                if !seen.contains(&g) {
                    stack.push(g);
                }
            }
        }
        seen
    };
    let mut reachable: BTreeSet<usize>;
    loop {
        reachable = below(&graph, &[entry]);
        let mut callers: HashMap<usize, Vec<usize>> = HashMap::new();
        for &f in &reachable {
            for (g, _, _) in graph.edges(f) {
                callers.entry(g).or_default().push(f);
            }
        }
        let mut indirect: HashMap<usize, BTreeSet<usize>> = HashMap::new();
        for &f in &reachable {
            let Some(b) = bodies.get(f) else { continue };
            // Function pointers (any slot) and vtable methods (their slot).
            let mut taken: BTreeSet<(usize, Option<u32>)> =
                b.address_taken.iter().map(|&g| (g, None)).collect();
            taken.extend(
                policy
                    .taken_by
                    .get(&f)
                    .into_iter()
                    .flatten()
                    .map(|&g| (g, None)),
            );
            for &d in &b.data_refs {
                taken.extend(
                    table_functions(code, &starts, d)
                        .into_iter()
                        .map(|(g, slot)| (g, Some(slot))),
                );
            }
            taken.retain(|(g, _)| !policy.not_indirect_targets.contains(g));
            if taken.is_empty() {
                continue;
            }
            let mut seeds = vec![f];
            seeds.extend(callers.get(&f).into_iter().flatten().copied());
            for g in below(&graph, &seeds) {
                let Some(site) = bodies.get(g) else { continue };
                if site.indirect_calls == 0 && site.indirect_tail_calls == 0 {
                    continue;
                }
                let filter = policy.indirect_filter.get(&g);
                let any_slot = site.indirect_slots.contains(&None);
                indirect.entry(g).or_default().extend(
                    taken
                        .iter()
                        .filter(|(t, slot)| {
                            let slot_fits = match slot {
                                None => true,
                                Some(s) => any_slot || site.indirect_slots.contains(&Some(*s)),
                            };
                            slot_fits && filter.is_none_or(|allowed| allowed.contains(t))
                        })
                        .map(|&(t, _)| t),
                );
            }
        }
        if indirect == graph.indirect {
            break;
        }
        graph.indirect = indirect;
    }
    let indirect_sites = reachable
        .iter()
        .filter_map(|&f| bodies.get(f))
        .map(|b| b.indirect_calls.saturating_add(b.indirect_tail_calls))
        .fold(0u32, u32::saturating_add);

    // Longest path, depth first, with memo; cycles through indirect edges are broken (noted),
    // direct cycles are an error.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Mark {
        Open,
        Done,
    }
    struct Walk<'g, 'a> {
        graph: &'g Graph<'a>,
        marks: HashMap<usize, Mark>,
        // depth and the next step of the deepest path: (bytes, next function and whether by an
        // indirect edge, kernel call at the end)
        best: HashMap<usize, Best>,
        // The functions being visited, and whether each was entered through a pointer call.
        open: Vec<(usize, bool)>,
        broken: Vec<Vec<usize>>,
    }
    impl Walk<'_, '_> {
        fn visit(&mut self, f: usize, entered_by_pointer: bool) -> Result<u64, Recursion> {
            if let Some(b) = self.best.get(&f) {
                return Ok(b.0);
            }
            self.marks.insert(f, Mark::Open);
            self.open.push((f, entered_by_pointer));
            let frame = u64::from(self.graph.functions.get(f).map_or(8, |x| x.frame));
            let body = self.graph.bodies.get(f);
            let mut best = (frame, None, None);
            if let Some(kernel) = body.and_then(|b| b.imports.iter().next()) {
                let allowance = u64::from(self.graph.policy.kernel_call_allowance);
                best = (frame.saturating_add(allowance), None, Some(kernel.clone()));
            }
            let levels = self.graph.policy.bounded_recursion.get(&f).copied();
            for (g, by_pointer, tail) in self.graph.edges(f) {
                if g == f && levels.is_some() {
                    continue;
                }
                if self.marks.get(&g) == Some(&Mark::Open) {
                    let at = self.open.iter().position(|&(x, _)| x == g).unwrap_or(0);
                    let members = self.open.get(at..).unwrap_or(&[]);
                    let cycle: Vec<usize> = members.iter().map(|&(x, _)| x).collect();
                    // A cycle with a pointer call in it exists only in the conservative reading
                    // of pointer calls: cut, and reported.
                    let through_pointer = by_pointer || members.iter().skip(1).any(|&(_, p)| p);
                    let panicking = cycle
                        .iter()
                        .any(|x| self.graph.policy.cut_cycles_through.contains(x));
                    if through_pointer || panicking {
                        self.broken.push(cycle);
                        continue;
                    }
                    return Err(Recursion { cycle });
                }
                let d = self.visit(g, by_pointer)?;
                let total = if tail { d } else { frame.saturating_add(d) };
                if total > best.0 {
                    best = (total, Some((g, by_pointer)), None);
                }
            }
            if let Some(levels) = levels {
                // The deepest level's path, below the frames of the levels above it.
                let above = frame.saturating_mul(u64::from(levels.saturating_sub(1)));
                best.0 = best.0.saturating_add(above);
            }
            self.open.pop();
            self.marks.insert(f, Mark::Done);
            let bytes = best.0;
            self.best.insert(f, best);
            Ok(bytes)
        }
    }
    let mut walk = Walk {
        graph: &graph,
        marks: HashMap::new(),
        best: HashMap::new(),
        open: Vec::new(),
        broken: Vec::new(),
    };
    let bytes = walk.visit(entry, false)?;
    let mut path = vec![(entry, false)];
    let mut kernel = None;
    let mut at = entry;
    while let Some((_, next, k)) = walk.best.get(&at) {
        match next {
            Some((g, by_pointer)) if path.len() < 10_000 => {
                path.push((*g, *by_pointer));
                at = *g;
            }
            _ => {
                kernel = k.clone();
                break;
            }
        }
    }
    Ok(Deepest {
        bytes,
        path,
        kernel,
        reachable: reachable.len(),
        indirect_sites,
        indirect_targets: graph
            .indirect
            .values()
            .flatten()
            .collect::<BTreeSet<_>>()
            .len(),
        broken_cycles: walk.broken,
    })
}

/// The stack bytes an x64 unwind-information block (`UNWIND_INFO` at `info`, read through
/// `read`) describes: every push and allocation, with chained information followed (at most 32
/// links). `None` if the block cannot be read.
pub fn unwind_bytes(read: &dyn Fn(u32, usize) -> Option<Vec<u8>>, info: u32) -> Option<u32> {
    let mut total = 0u32;
    let mut at = info;
    for _ in 0..32 {
        let head = read(at, 4)?;
        let flags = head.first()? >> 3;
        let count = usize::from(*head.get(2)?);
        let codes = read(at.checked_add(4)?, count.checked_mul(2)?)?;
        let slot = |i: usize| -> Option<u16> {
            Some(u16::from_le_bytes([
                *codes.get(i * 2)?,
                *codes.get(i * 2 + 1)?,
            ]))
        };
        let mut i = 0;
        while i < count {
            let code = slot(i)?;
            let op = (code >> 8) & 0xF;
            let info = u32::from(code >> 12);
            let (bytes, slots) = match op {
                0 => (8, 1),                                        // UWOP_PUSH_NONVOL
                1 if info == 0 => (u32::from(slot(i + 1)?) * 8, 2), // UWOP_ALLOC_LARGE
                1 => (u32::from(slot(i + 1)?) | (u32::from(slot(i + 2)?) << 16), 3),
                2 => (info * 8 + 8, 1), // UWOP_ALLOC_SMALL
                3 => (0, 1),            // UWOP_SET_FPREG
                4 => (0, 2),            // UWOP_SAVE_NONVOL
                5 => (0, 3),            // UWOP_SAVE_NONVOL_FAR
                6 | 8 => (0, 2),        // UWOP_EPILOG / SAVE_XMM128
                7 | 9 => (0, 3),        // UWOP_SPARE / SAVE_XMM128_FAR
                10 => (if info == 0 { 40 } else { 48 }, 1), // UWOP_PUSH_MACHFRAME
                _ => return None,
            };
            total = total.checked_add(bytes)?;
            i += slots;
        }
        if flags & 0x4 == 0 {
            return Some(total);
        }
        // UNW_FLAG_CHAININFO: a RUNTIME_FUNCTION follows the (even-count) codes.
        let chained_at = at
            .checked_add(4)?
            .checked_add(u32::try_from(count.div_ceil(2) * 4).ok()?)?;
        let chained = read(chained_at, 12)?;
        at = u32::from_le_bytes([
            *chained.get(8)?,
            *chained.get(9)?,
            *chained.get(10)?,
            *chained.get(11)?,
        ]);
    }
    None
}
