//! The kernel-stack budget of Bulwark's driver, computed from the built image.
//!
//! An x64 kernel thread has a 24 KiB stack (`KERNEL_STACK_SIZE`), of which the kernel and every
//! driver above ours in the call chain take their part; overflowing it is a bugcheck
//! (`UNEXPECTED_KERNEL_MODE_TRAP` with a double fault), and Wine, whose threads have 1 MiB stacks,
//! never shows it. This crate computes, from the .sys and its PDB:
//!
//! - each function's **frame**, plus the return address: from its x64 unwind information
//!   (`.pdata`/`.xdata`: every push, every stack allocation, chained unwind information
//!   followed; see [`unwind_bytes`]), cross-checked against its decoded prologue (pushes,
//!   `sub rsp`, the stack probe `mov eax, N; call __chkstk; sub rsp, rax`; see [`prologue`]) and
//!   the PDB's `S_FRAMEPROC`; the largest of them counts. A function without unwind information
//!   is a leaf that moves no stack pointer: 8 bytes;
//! - its **calls**, by decoding every instruction (iced-x86, see [`decode`]): direct calls, tail
//!   jumps to other functions (after an epilogue the callee's frame replaces the caller's; any
//!   other jump to a function is counted as a call), calls into the import address table
//!   (kernel calls: a fixed allowance each, for the kernel's own frames below ours; the stack
//!   probe is not one), and indirect calls with the vtable slot they read where it shows;
//! - the **deepest path** from each entry point (see [`deepest`]), with indirect calls resolved
//!   conservatively: by default a call through a pointer may reach any function whose address
//!   the image takes (an `lea` of its start, or a relocated pointer to it in data: vtables,
//!   tables of function pointers) in a slot the call may read, except the entry points, which
//!   only the kernel calls (see [`Targets`]).
//!
//! Recursion makes a path unbounded: a cycle of direct calls fails the check. A cycle that
//! passes through a pointer call (an artifact of the conservative reading) or through the panic
//! path (which ends in a bugcheck) is cut and reported.

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
    /// Functions called directly (indices); a jump to another function's start that does not
    /// follow an epilogue is counted here too, as a call (see [`Body::unverified_tail_jumps`]).
    pub calls: BTreeSet<usize>,
    /// Functions jumped to as a tail call, right after an epilogue (or from a function without a
    /// frame): the x64 ABI has the frame popped by then, so the callee's frame replaces this one's.
    pub tail_calls: BTreeSet<usize>,
    /// Jumps to another function's start that follow no epilogue: counted as calls, frame kept.
    pub unverified_tail_jumps: u32,
    /// Kernel functions called through the import address table.
    pub imports: BTreeSet<String>,
    /// Calls to the stack probe (`__chkstk`): part of the prologue, not a kernel call; it runs on
    /// the frame it is about to allocate.
    pub stack_probes: u32,
    /// The size argument (`r8`) of each `KeExpandKernelStackAndCallout` call, when a `mov` of a
    /// constant to `r8` precedes the call in its block; `None` when it could not be read.
    pub stack_expansions: Vec<Option<u64>>,
    /// Calls through a register or a pointer that is not an import.
    pub indirect_calls: u32,
    /// Tail jumps through a pointer in memory (`jmp [rax+0x20]`: a virtual call made last).
    pub indirect_tail_calls: u32,
    /// Jumps through a register (`jmp rax`): jump tables within the function.
    pub register_jumps: u32,
    /// The vtable slots the indirect calls and tail calls read (`call [rax+0x18]`, or `mov rax,
    /// [rcx+0x18]; call rax` in one block: slot 3), or `None` for a call whose pointer's origin
    /// is not known, which may reach any slot.
    pub indirect_slots: BTreeSet<Option<u32>>,
    /// Functions whose address this one takes (an `lea` or `mov` of the function's start).
    pub address_taken: BTreeSet<usize>,
    /// Data this function references by address (vtables are looked for there).
    pub data_refs: BTreeSet<u32>,
    /// Direct calls to addresses that start no known function.
    pub unknown_calls: BTreeSet<u32>,
}

/// Imported functions that are part of a prologue rather than calls into the kernel: the stack
/// probe, called before the frame is allocated, touching each page of it (its own few bytes lie
/// inside the frame being allocated).
pub const STACK_PROBES: [&str; 3] = ["__chkstk", "_chkstk", "__chkstk_ms"];

/// The kernel routine that runs a callout on a fresh stack.
pub const EXPAND_STACK: &str = "KeExpandKernelStackAndCallout";

/// The registers a call preserves (the x64 calling convention's non-volatile registers).
const NON_VOLATILE: [iced_x86::Register; 8] = [
    iced_x86::Register::RBX,
    iced_x86::Register::RBP,
    iced_x86::Register::RSI,
    iced_x86::Register::RDI,
    iced_x86::Register::R12,
    iced_x86::Register::R13,
    iced_x86::Register::R14,
    iced_x86::Register::R15,
];

/// What a register holds, as far as the decoder follows it within one basic block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Loaded from `[base+disp]`: a vtable slot if it is a multiple of 8 below 64 slots.
    Slot(Option<u32>),
    /// A constant.
    Constant(u64),
}

/// Decodes every function's instructions.
pub fn decode(functions: &[Function], code: &Code) -> Vec<Body> {
    use iced_x86::{InstructionInfoFactory, Mnemonic, OpAccess, Register};
    let starts: HashMap<u32, usize> = functions
        .iter()
        .enumerate()
        .map(|(i, f)| (f.rva, i))
        .collect();
    let text_end = code
        .text_rva
        .saturating_add(u32::try_from(code.text.len()).unwrap_or(u32::MAX));
    let mut factory = InstructionInfoFactory::new();
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
            // Branch targets inside the function start blocks: what a register holds is
            // forgotten there. A function with a jump table (`jmp reg`) may enter a block
            // anywhere, so nothing is followed in it.
            let mut labels = BTreeSet::new();
            let mut jump_table = false;
            // Whether `rbp` is a frame pointer (`mov rbp, rsp` or `lea rbp, [rsp+N]`).
            let mut frame_pointer = false;
            let mut decoder = Decoder::with_ip(64, bytes, u64::from(f.rva), DecoderOptions::NONE);
            let mut ins = Instruction::default();
            while decoder.can_decode() {
                decoder.decode_out(&mut ins);
                match ins.flow_control() {
                    FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch
                        if ins.op0_kind() == OpKind::NearBranch64 =>
                    {
                        labels.insert(ins.near_branch64() as u32);
                    }
                    FlowControl::IndirectBranch if ins.op0_kind() == OpKind::Register => {
                        jump_table = true;
                    }
                    _ => {}
                }
                if ins.op0_kind() == OpKind::Register
                    && ins.op0_register() == Register::RBP
                    && ((ins.mnemonic() == Mnemonic::Mov
                        && ins.op1_kind() == OpKind::Register
                        && ins.op1_register() == Register::RSP)
                        || (ins.mnemonic() == Mnemonic::Lea && ins.memory_base() == Register::RSP))
                {
                    frame_pointer = true;
                }
            }
            let mut held: HashMap<Register, Held> = HashMap::new();
            // Whether the previous instruction ends an epilogue (`pop`, `add rsp`, `lea rsp`).
            let mut after_epilogue = false;
            let mut decoder = Decoder::with_ip(64, bytes, u64::from(f.rva), DecoderOptions::NONE);
            while decoder.can_decode() {
                decoder.decode_out(&mut ins);
                if ins.is_invalid() {
                    held.clear();
                    after_epilogue = false;
                    continue;
                }
                if jump_table || labels.contains(&(ins.ip() as u32)) {
                    held.clear();
                }
                let epilogue = match ins.mnemonic() {
                    Mnemonic::Pop => true,
                    Mnemonic::Add | Mnemonic::Lea => {
                        ins.op0_kind() == OpKind::Register && ins.op0_register() == Register::RSP
                    }
                    _ => false,
                };
                let was_after_epilogue = std::mem::replace(&mut after_epilogue, epilogue);
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
                                (None, Some(name)) => body.import_call(name, &held),
                                (None, None) => {
                                    body.unknown_calls.insert(target);
                                }
                            }
                        } else if let Some(name) = memory.and_then(|m| code.imports.get(&m)) {
                            body.import_call(name.clone(), &held);
                        } else if let Some(&i) = memory
                            .and_then(|m| code.pointers.get(&m))
                            .and_then(|t| starts.get(t))
                        {
                            // A call through a relocated constant pointer: its one target.
                            body.calls.insert(i);
                        } else {
                            body.indirect_calls = body.indirect_calls.saturating_add(1);
                            body.indirect_slots
                                .insert(pointer_slot(&ins, &held, frame_pointer));
                        }
                        // A call keeps the non-volatile registers (x64 calling convention).
                        held.retain(|r, _| NON_VOLATILE.contains(r));
                        continue;
                    }
                    FlowControl::UnconditionalBranch => {
                        if ins.op0_kind() == OpKind::NearBranch64 {
                            let target = ins.near_branch64() as u32;
                            if target < f.rva || target >= end {
                                if let Some(&i) = starts.get(&target) {
                                    if was_after_epilogue || f.frame <= 8 {
                                        body.tail_calls.insert(i);
                                    } else {
                                        body.calls.insert(i);
                                        body.unverified_tail_jumps =
                                            body.unverified_tail_jumps.saturating_add(1);
                                    }
                                } else if let Some(name) = import_thunk(code, target) {
                                    body.import_call(name, &held);
                                }
                            }
                        }
                        held.clear();
                        continue;
                    }
                    FlowControl::IndirectBranch => {
                        if let Some(name) = memory.and_then(|m| code.imports.get(&m)) {
                            body.import_call(name.clone(), &held);
                        } else if ins.op0_kind() == OpKind::Memory {
                            body.indirect_tail_calls = body.indirect_tail_calls.saturating_add(1);
                            body.indirect_slots
                                .insert(pointer_slot(&ins, &held, frame_pointer));
                        } else {
                            body.register_jumps = body.register_jumps.saturating_add(1);
                        }
                        held.clear();
                        continue;
                    }
                    // The fall-through block is entered from here only (the branch's target
                    // is a label, where what is held is forgotten).
                    FlowControl::Next | FlowControl::ConditionalBranch => {}
                    _ => {
                        held.clear();
                        continue;
                    }
                }
                if let Some(m) = memory {
                    if let Some(&i) = starts.get(&m) {
                        body.address_taken.insert(i);
                    } else if (m < code.text_rva || m >= text_end) && !code.imports.contains_key(&m)
                    {
                        body.data_refs.insert(m);
                    }
                }
                // What the registers hold after this instruction.
                let loaded = if ins.op_count() == 2 && ins.op0_kind() == OpKind::Register {
                    let to = ins.op0_register().full_register();
                    match (ins.mnemonic(), ins.op1_kind()) {
                        (Mnemonic::Mov, OpKind::Memory)
                            if ins.memory_base() != Register::RIP
                                && ins.memory_base() != Register::None
                                && !in_frame(ins.memory_base(), frame_pointer)
                                && ins.memory_index() == Register::None =>
                        {
                            Some((
                                to,
                                Held::Slot(displacement_slot(ins.memory_displacement64())),
                            ))
                        }
                        (
                            Mnemonic::Mov,
                            OpKind::Immediate8
                            | OpKind::Immediate16
                            | OpKind::Immediate32
                            | OpKind::Immediate64
                            | OpKind::Immediate32to64
                            | OpKind::Immediate8to64,
                        ) => Some((to, Held::Constant(ins.immediate(1)))),
                        _ => None,
                    }
                } else {
                    None
                };
                for used in factory.info(&ins).used_registers() {
                    if !matches!(
                        used.access(),
                        OpAccess::Read | OpAccess::CondRead | OpAccess::None
                    ) {
                        held.remove(&used.register().full_register());
                    }
                }
                if let Some((to, value)) = loaded {
                    held.insert(to, value);
                }
            }
            body
        })
        .collect()
}

impl Body {
    fn import_call(&mut self, name: String, held: &HashMap<iced_x86::Register, Held>) {
        if STACK_PROBES.contains(&name.as_str()) {
            self.stack_probes = self.stack_probes.saturating_add(1);
            return;
        }
        if name == EXPAND_STACK {
            let size = match held.get(&iced_x86::Register::R8) {
                Some(Held::Constant(c)) => Some(*c),
                _ => None,
            };
            self.stack_expansions.push(size);
        }
        self.imports.insert(name);
    }
}

/// `disp / 8` when `disp` is a multiple of 8 below 64 slots.
fn displacement_slot(disp: u64) -> Option<u32> {
    (disp % 8 == 0 && disp < 64 * 8).then_some((disp / 8) as u32)
}

/// The slot an indirect call reads: `call [reg+disp]` reads `disp / 8`; `call reg` reads what the
/// register was loaded with in the same block (`mov reg, [base+disp]`), if that is known.
///
/// A pointer read from the stack frame (`call [rsp+0x40]`: a spilled argument or local) reads no
/// vtable slot the decoder knows.
fn pointer_slot(
    ins: &Instruction,
    held: &HashMap<iced_x86::Register, Held>,
    frame_pointer: bool,
) -> Option<u32> {
    if ins.op0_kind() == OpKind::Register {
        return match held.get(&ins.op0_register().full_register()) {
            Some(Held::Slot(slot)) => *slot,
            _ => None,
        };
    }
    if in_frame(ins.memory_base(), frame_pointer) {
        return None;
    }
    vtable_slot(ins)
}

/// Whether a memory operand based on `base` is in the stack frame: `rsp`, or `rbp` in a function
/// that sets it from `rsp`.
fn in_frame(base: iced_x86::Register, frame_pointer: bool) -> bool {
    base == iced_x86::Register::RSP || (frame_pointer && base == iced_x86::Register::RBP)
}

/// What a function's first instructions allocate on the stack, read by decoding them: the
/// cross-check of the unwind information.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prologue {
    /// Bytes pushed (8 per `push`).
    pub pushes: u32,
    /// Bytes allocated: `sub rsp, imm`, `lea rsp, [rsp-imm]`, or the stack-probe sequence
    /// `mov eax, N; call __chkstk; sub rsp, rax` (N).
    pub allocation: u32,
    /// Whether the allocation went through the stack probe.
    pub probed: bool,
    /// The most an `and rsp, -A` realignment can add: `A - 8`.
    pub realignment: u32,
}

impl Prologue {
    /// The frame the prologue makes, with the return address.
    pub fn frame(&self) -> u32 {
        8u32.saturating_add(self.pushes)
            .saturating_add(self.allocation)
            .saturating_add(self.realignment)
    }
}

/// Decodes the prologue of the function at `rva` (at most `len` bytes, 64 instructions): every
/// push and stack allocation before its first branch, call (other than the stack probe), return
/// or epilogue instruction.
pub fn prologue(code: &Code, rva: u32, len: u32) -> Prologue {
    use iced_x86::{Mnemonic, Register};
    let mut out = Prologue::default();
    let from = rva.saturating_sub(code.text_rva) as usize;
    let to = from.saturating_add(len as usize).min(code.text.len());
    let Some(bytes) = code.text.get(from..to) else {
        return out;
    };
    let mut decoder = Decoder::with_ip(64, bytes, u64::from(rva), DecoderOptions::NONE);
    let mut ins = Instruction::default();
    // `mov eax, N` seen, and then the probe's call: `sub rsp, rax` allocates N.
    let mut probe_size: Option<u32> = None;
    for _ in 0..64 {
        if !decoder.can_decode() {
            break;
        }
        decoder.decode_out(&mut ins);
        let to_rsp = ins.op0_kind() == OpKind::Register && ins.op0_register() == Register::RSP;
        let small = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        match ins.mnemonic() {
            Mnemonic::Push | Mnemonic::Pushfq => {
                out.pushes = out.pushes.saturating_add(8);
                continue;
            }
            Mnemonic::Mov
                if ins.op0_kind() == OpKind::Register
                    && ins.op0_register().full_register() == Register::RAX =>
            {
                probe_size = matches!(
                    ins.op1_kind(),
                    OpKind::Immediate32 | OpKind::Immediate64 | OpKind::Immediate32to64
                )
                .then(|| small(ins.immediate(1)));
                continue;
            }
            Mnemonic::Call if probe_size.is_some() => continue,
            Mnemonic::Sub if to_rsp => {
                if ins.op1_kind() == OpKind::Register
                    && ins.op1_register() == Register::RAX
                    && probe_size.is_some()
                {
                    out.allocation = out.allocation.saturating_add(probe_size.unwrap_or(0));
                    out.probed = true;
                } else if ins.op1_kind() != OpKind::Register {
                    out.allocation = out.allocation.saturating_add(small(ins.immediate(1)));
                }
                continue;
            }
            Mnemonic::Lea
                if to_rsp
                    && ins.memory_base() == Register::RSP
                    && ins.memory_index() == Register::None
                    && (ins.memory_displacement64() as i64) < 0 =>
            {
                let down = (ins.memory_displacement64() as i64).unsigned_abs();
                out.allocation = out.allocation.saturating_add(small(down));
                continue;
            }
            Mnemonic::And if to_rsp && ins.op1_kind() != OpKind::Register => {
                let align = (ins.immediate(1) as i64).unsigned_abs();
                out.realignment = out
                    .realignment
                    .saturating_add(small(align.saturating_sub(8)));
                continue;
            }
            Mnemonic::Pop | Mnemonic::Ret => break,
            Mnemonic::Add if to_rsp => break,
            _ => {}
        }
        if ins.flow_control() != FlowControl::Next {
            break;
        }
    }
    out
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
    displacement_slot(ins.memory_displacement64())
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

/// Which functions an indirect call may reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Targets {
    /// Any function whose address is taken anywhere in the image: by an instruction (`lea` of its
    /// start), or by a relocated pointer in data (a vtable slot, a table of function pointers),
    /// with the slot rule of [`Body::indirect_slots`]. Sound for pointers kept in global state.
    #[default]
    Image,
    /// Only functions whose address the code reachable from the entry takes, above the call
    /// site (see [`deepest`]). Narrower; misses a pointer stored in global state by one entry and
    /// called from another.
    Entry,
}

/// Every function whose address the image takes, with the vtable slot it sits in when that is
/// known: relocated pointers outside the code section that point at a function's start (each in
/// every slot that puts a referenced address 0 to 63 slots before it: a table's start), and
/// `lea`/`mov` of a function's start (any slot).
pub fn image_taken(
    functions: &[Function],
    bodies: &[Body],
    code: &Code,
) -> BTreeSet<(usize, Option<u32>)> {
    let starts: HashMap<u32, usize> = functions
        .iter()
        .enumerate()
        .map(|(i, f)| (f.rva, i))
        .collect();
    let text_end = code
        .text_rva
        .saturating_add(u32::try_from(code.text.len()).unwrap_or(u32::MAX));
    let in_text = |a: u32| a >= code.text_rva && a < text_end;
    // Where a table may start: an address the code or the data refers to.
    let mut bases: BTreeSet<u32> = bodies
        .iter()
        .flat_map(|b| b.data_refs.iter().copied())
        .collect();
    bases.extend(code.pointers.values().copied().filter(|&t| !in_text(t)));
    let mut out: BTreeSet<(usize, Option<u32>)> = bodies
        .iter()
        .flat_map(|b| b.address_taken.iter().map(|&g| (g, None)))
        .collect();
    for (&at, target) in &code.pointers {
        let Some(&g) = starts.get(target) else {
            continue;
        };
        if in_text(at) {
            out.insert((g, None));
            continue;
        }
        let slots: Vec<u32> = (0u32..64)
            .filter(|k| {
                at.checked_sub(k.saturating_mul(8))
                    .is_some_and(|base| bases.contains(&base))
            })
            .collect();
        if slots.is_empty() {
            out.insert((g, None));
        }
        out.extend(slots.into_iter().map(|k| (g, Some(k))));
    }
    out
}

/// How calls the decoder cannot follow are counted.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Which functions an indirect call may reach.
    pub targets: Targets,
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
    /// Functions only these call sites may reach through a pointer: the closures
    /// `on_large_stack` hands the kernel, which only the callout (or a shim it calls directly)
    /// calls, never a pointer call inside another closure.
    pub only_from: HashMap<usize, BTreeSet<usize>>,
    /// Functions whose address, taken as a plain function pointer (not a vtable slot), only
    /// these call sites call through: a formatting function's pointer in an `fmt::Argument`,
    /// which only `core::fmt` reads.
    pub pointer_callers: HashMap<usize, BTreeSet<usize>>,
}

/// The functions of `taken` the indirect calls of `site` (function `g`) may reach: those in a
/// slot the site reads (any slot if one of its calls reads an unknown one and
/// `unknown_slot_reads_any`); a plain function pointer fits any call (but see
/// [`Policy::pointer_callers`]); within [`Policy::indirect_filter`] and [`Policy::only_from`].
fn site_targets(
    g: usize,
    site: &Body,
    policy: &Policy,
    taken: &BTreeSet<(usize, Option<u32>)>,
    unknown_slot_reads_any: bool,
) -> BTreeSet<usize> {
    let any_slot = unknown_slot_reads_any && site.indirect_slots.contains(&None);
    let filter = policy.indirect_filter.get(&g);
    taken
        .iter()
        .filter(|(t, slot)| {
            let slot_fits = match slot {
                None => policy
                    .pointer_callers
                    .get(t)
                    .is_none_or(|sites| sites.contains(&g)),
                Some(s) => any_slot || site.indirect_slots.contains(&Some(*s)),
            };
            slot_fits
                && filter.is_none_or(|allowed| allowed.contains(t))
                && policy
                    .only_from
                    .get(t)
                    .is_none_or(|sites| sites.contains(&g))
        })
        .map(|&(t, _)| t)
        .collect()
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
    /// Groups of functions that call each other in a cycle through a pointer call or the panic
    /// path (a cycle of direct calls is an error instead): the walk does not follow a call back
    /// into a function it is in.
    pub broken_cycles: Vec<Vec<usize>>,
    /// The cyclic groups on the deepest path: the index in `path` of the first function of the
    /// group on it, and the group's functions.
    pub cycles_on_path: Vec<(usize, Vec<usize>)>,
    /// Each reachable function with indirect calls, and how many functions they may reach.
    pub site_targets: BTreeMap<usize, usize>,
}

/// Why no bound exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recursion {
    /// The functions of the cycle.
    pub cycle: Vec<usize>,
}

struct Graph<'a> {
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

/// The deepest stack from `entry`.
///
/// Indirect calls ([`Policy::targets`]): with [`Targets::Image`] (the default) a pointer call may
/// reach every function whose address the image takes ([`image_taken`]), in a slot it may read;
/// a trait object kept in global state by one entry and called from another is covered. With
/// [`Targets::Entry`] a function's address counts as taken where the code reachable from the
/// entry materialises it (an `lea` of its start, or a vtable slot, the vtable referenced by an
/// `lea`): a trait object or function pointer made in function F is passed down to F's callees,
/// or returned to F's caller and passed down from there; so an indirect call in G may reach what
/// F takes if G is below F or below one of F's callers (that misses pointers kept in globals).
/// Both are computed to a fixed point (new edges make more code reachable), minus
/// [`Policy::not_indirect_targets`], within [`Policy::indirect_filter`] and
/// [`Policy::only_from`]; a function listed in [`Policy::indirect_targets_of`] reaches exactly
/// its list.
///
/// Cycles: the strongly connected groups of the call graph are found first; a cycle of direct
/// calls through no function of [`Policy::cut_cycles_through`] is [`Recursion`] (a call of a
/// [`Policy::bounded_recursion`] function to itself excepted). The longest path is then walked
/// depth first, a call back into a function on the walk not followed: each such cycle is
/// reported in [`Deepest::broken_cycles`].
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
    let mut everywhere = BTreeSet::new();
    if policy.targets == Targets::Image {
        everywhere = image_taken(functions, bodies, code);
        everywhere.extend(policy.taken_by.values().flatten().map(|&g| (g, None)));
        everywhere.retain(|(g, _)| !policy.not_indirect_targets.contains(g));
    }
    // Reachable functions and address-taken functions, to a fixed point.
    let mut graph = Graph {
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
        if policy.targets == Targets::Image {
            for &g in &reachable {
                let Some(site) = bodies.get(g) else { continue };
                if site.indirect_calls > 0 || site.indirect_tail_calls > 0 {
                    indirect.insert(g, site_targets(g, site, policy, &everywhere, false));
                }
            }
        }
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
                let targets = site_targets(g, site, policy, &taken, true);
                indirect.entry(g).or_default().extend(targets);
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

    let nodes: Vec<usize> = reachable.iter().copied().collect();
    let edges: HashMap<usize, Vec<(usize, bool, bool)>> =
        nodes.iter().map(|&f| (f, graph.edges(f))).collect();
    let levels = |f: usize| policy.bounded_recursion.get(&f).copied();

    // A cycle of direct calls, none of whose functions is on the panic path, is recursion: no
    // bound (a bounded recursion's call to itself excepted).
    let direct: HashMap<usize, Vec<usize>> = nodes
        .iter()
        .filter(|f| !policy.cut_cycles_through.contains(f))
        .map(|&f| {
            let next = edges
                .get(&f)
                .into_iter()
                .flatten()
                .filter(|&&(g, by_pointer, _)| {
                    let bounded_self_call = g == f && levels(f).is_some();
                    !(by_pointer || policy.cut_cycles_through.contains(&g) || bounded_self_call)
                })
                .map(|&(g, _, _)| g)
                .collect();
            (f, next)
        })
        .collect();
    for group in components(&direct) {
        if let Some(cycle) = a_cycle(&group, &direct) {
            return Err(Recursion { cycle });
        }
    }

    // The other cycles pass through a pointer call (they exist only in the conservative reading
    // of pointer calls) or through the panic path (which ends in a bugcheck): they are cut where
    // the walk below meets them (a call back into a function the walk is in is not followed),
    // and reported.
    let all: HashMap<usize, Vec<usize>> = nodes
        .iter()
        .map(|&f| {
            let next = edges
                .get(&f)
                .into_iter()
                .flatten()
                .filter(|&&(g, _, _)| !(g == f && levels(f).is_some()))
                .map(|&(g, _, _)| g)
                .collect();
            (f, next)
        })
        .collect();
    let groups: Vec<Vec<usize>> = components(&all)
        .into_iter()
        .filter(|g| g.len() > 1 || g.iter().any(|f| all.get(f).is_some_and(|n| n.contains(f))))
        .collect();

    // Longest path, depth first, with memo.
    /// A function's deepest stack: bytes, the next function on the path (and whether by a
    /// pointer call), and the kernel function the path ends in.
    type Step = (u64, Option<(usize, bool)>, Option<String>);
    struct Walk<'e> {
        edges: &'e HashMap<usize, Vec<(usize, bool, bool)>>,
        functions: &'e [Function],
        bodies: &'e [Body],
        policy: &'e Policy,
        open: BTreeSet<usize>,
        // Bytes, the next step of the deepest path (function, through a pointer), and the kernel
        // call it ends in.
        best: HashMap<usize, Step>,
    }
    impl Walk<'_> {
        fn visit(&mut self, f: usize) -> u64 {
            if let Some(b) = self.best.get(&f) {
                return b.0;
            }
            self.open.insert(f);
            let frame = u64::from(self.functions.get(f).map_or(8, |x| x.frame));
            let mut best = (frame, None, None);
            if let Some(kernel) = self.bodies.get(f).and_then(|b| b.imports.iter().next()) {
                let allowance = u64::from(self.policy.kernel_call_allowance);
                best = (frame.saturating_add(allowance), None, Some(kernel.clone()));
            }
            let levels = self.policy.bounded_recursion.get(&f).copied();
            let edges = self.edges;
            for &(g, by_pointer, tail) in edges.get(&f).into_iter().flatten() {
                if self.open.contains(&g) {
                    continue;
                }
                let d = self.visit(g);
                // After a tail jump the callee's frame replaces the caller's.
                let total = if tail {
                    d.max(frame)
                } else {
                    frame.saturating_add(d)
                };
                if total > best.0 {
                    best = (total, Some((g, by_pointer)), None);
                }
            }
            if let Some(levels) = levels {
                // The deepest level's path, below the frames of the levels above it.
                let above = frame.saturating_mul(u64::from(levels.saturating_sub(1)));
                best.0 = best.0.saturating_add(above);
            }
            self.open.remove(&f);
            let bytes = best.0;
            self.best.insert(f, best);
            bytes
        }
    }
    let mut walk = Walk {
        edges: &edges,
        functions,
        bodies,
        policy,
        open: BTreeSet::new(),
        best: HashMap::new(),
    };
    let bytes = walk.visit(entry);
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
    let cycles_on_path = groups
        .iter()
        .filter_map(|g| {
            let at = path.iter().position(|(f, _)| g.contains(f))?;
            Some((at, g.clone()))
        })
        .collect();
    let broken_cycles = groups;
    let site_targets = graph
        .indirect
        .iter()
        .filter(|(f, _)| reachable.contains(f))
        .map(|(&f, t)| (f, t.len()))
        .collect();
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
        broken_cycles,
        cycles_on_path,
        site_targets,
    })
}

/// The strongly connected components of `graph` (Tarjan), each listed after every component it
/// reaches.
fn components(graph: &HashMap<usize, Vec<usize>>) -> Vec<Vec<usize>> {
    struct Tarjan<'g> {
        graph: &'g HashMap<usize, Vec<usize>>,
        index: HashMap<usize, usize>,
        low: HashMap<usize, usize>,
        on_stack: BTreeSet<usize>,
        stack: Vec<usize>,
        out: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            let graph = self.graph;
            for &w in graph.get(&v).into_iter().flatten() {
                if !graph.contains_key(&w) {
                    continue;
                }
                if !self.index.contains_key(&w) {
                    self.visit(w);
                    let lw = self.low.get(&w).copied().unwrap_or(n);
                    let lv = self.low.entry(v).or_insert(n);
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(&w) {
                    let iw = self.index.get(&w).copied().unwrap_or(n);
                    let lv = self.low.entry(v).or_insert(n);
                    *lv = (*lv).min(iw);
                }
            }
            if self.low.get(&v) == self.index.get(&v) {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(&w);
                    group.push(w);
                    if w == v {
                        break;
                    }
                }
                group.sort_unstable();
                self.out.push(group);
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: HashMap::new(),
        low: HashMap::new(),
        on_stack: BTreeSet::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    let mut roots: Vec<usize> = graph.keys().copied().collect();
    roots.sort_unstable();
    for v in roots {
        if !t.index.contains_key(&v) {
            t.visit(v);
        }
    }
    t.out
}

/// A cycle within `group` (a strongly connected component of `graph`), in call order, if it has
/// one: a group of more than one function, or one that calls itself.
fn a_cycle(group: &[usize], graph: &HashMap<usize, Vec<usize>>) -> Option<Vec<usize>> {
    let &start = group.first()?;
    let inside: BTreeSet<usize> = group.iter().copied().collect();
    let next = |f: usize| -> Vec<usize> {
        graph
            .get(&f)
            .into_iter()
            .flatten()
            .copied()
            .filter(|g| inside.contains(g))
            .collect()
    };
    if group.len() == 1 {
        return next(start).contains(&start).then(|| vec![start]);
    }
    // Breadth first from `start` back to `start`: the shortest cycle through it.
    let mut from: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(f) = queue.pop_front() {
        for g in next(f) {
            if g == start {
                let mut cycle = vec![f];
                let mut at = f;
                while let Some(&p) = from.get(&at) {
                    cycle.push(p);
                    at = p;
                }
                cycle.reverse();
                return Some(cycle);
            }
            if let std::collections::hash_map::Entry::Vacant(e) = from.entry(g) {
                e.insert(f);
                queue.push_back(g);
            }
        }
    }
    None
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
