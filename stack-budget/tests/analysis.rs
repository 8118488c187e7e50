//! The analysis on hand-assembled x64 code, and on the real driver image when it has been built.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, HashMap};

use stack_budget::{
    decode, deepest, image_taken, prologue, unwind_bytes, Code, Function, Policy, Targets,
};

const TEXT: u32 = 0x1000;
const IAT_SLOT: u32 = 0x3000;

/// A little assembler: bytes placed at RVAs in a text section.
struct Asm {
    text: Vec<u8>,
}

impl Asm {
    fn at(&mut self, rva: u32, bytes: &[u8]) -> u32 {
        let off = (rva - TEXT) as usize;
        if self.text.len() < off + bytes.len() {
            self.text.resize(off + bytes.len(), 0xCC);
        }
        self.text[off..off + bytes.len()].copy_from_slice(bytes);
        rva + bytes.len() as u32
    }
    /// An instruction `op` ending in a rel32 to `target`.
    fn rel(&mut self, rva: u32, op: &[u8], target: u32) -> u32 {
        let end = rva + op.len() as u32 + 4;
        let mut b = op.to_vec();
        b.extend_from_slice(&(target.wrapping_sub(end)).to_le_bytes());
        self.at(rva, &b)
    }
}

fn f(name: &str, rva: u32, frame: u32) -> Function {
    Function {
        name: name.into(),
        rva,
        len: 0x40,
        frame,
    }
}

/// f0 calls f1 and the kernel; f1 calls through a register and takes f2's address; f2 tail-jumps
/// to f3, a leaf; f4 is a vtable method nobody reachable references.
fn program() -> (Vec<Function>, Code) {
    let mut a = Asm { text: Vec::new() };
    let (f0, f1, f2, f3, f4) = (0x1000, 0x1040, 0x1080, 0x10C0, 0x1100);
    let mut p = a.at(f0, &[0x53, 0x48, 0x83, 0xEC, 0x20]); // push rbx; sub rsp, 0x20
    p = a.rel(p, &[0xE8], f1); // call f1
    p = a.rel(p, &[0xFF, 0x15], IAT_SLOT); // call [rip+IAT]
    a.at(p, &[0x48, 0x83, 0xC4, 0x20, 0x5B, 0xC3]); // add rsp, 0x20; pop rbx; ret
    p = a.at(f1, &[0x48, 0x81, 0xEC, 0x00, 0x01, 0x00, 0x00]); // sub rsp, 0x100
    p = a.at(p, &[0xFF, 0xD0]); // call rax
    p = a.rel(p, &[0x48, 0x8D, 0x0D], f2); // lea rcx, [rip+f2]
    a.at(p, &[0x48, 0x81, 0xC4, 0x00, 0x01, 0x00, 0x00, 0xC3]);
    p = a.at(f2, &[0x55, 0x5D]); // push rbp; pop rbp
    a.rel(p, &[0xE9], f3); // jmp f3
    a.at(f3, &[0xC3]);
    a.at(f4, &[0x48, 0x83, 0xEC, 0x78, 0x48, 0x83, 0xC4, 0x78, 0xC3]);
    let functions = vec![
        f("f0", f0, 8 + 8 + 0x20),
        f("f1", f1, 8 + 0x100),
        f("f2", f2, 16),
        f("f3", f3, 8),
        f("f4", f4, 8 + 0x78),
    ];
    let code = Code {
        text_rva: TEXT,
        text: a.text,
        imports: HashMap::from([(IAT_SLOT, "KeBugCheckEx".to_string())]),
        pointers: BTreeMap::new(),
    };
    (functions, code)
}

#[test]
fn calls_kernel_calls_indirect_calls_and_tail_calls_are_found() {
    let (functions, code) = program();
    let bodies = decode(&functions, &code);
    assert_eq!(bodies[0].calls.iter().copied().collect::<Vec<_>>(), [1]);
    assert!(
        bodies[0].imports.contains("KeBugCheckEx"),
        "{:?}",
        bodies[0]
    );
    assert_eq!(bodies[1].indirect_calls, 1);
    assert_eq!(
        bodies[1].address_taken.iter().copied().collect::<Vec<_>>(),
        [2]
    );
    assert_eq!(
        bodies[2].tail_calls.iter().copied().collect::<Vec<_>>(),
        [3]
    );
    assert!(bodies[3].calls.is_empty() && bodies[3].tail_calls.is_empty());
}

#[test]
fn the_deepest_path_adds_frames_and_follows_pointers_and_tail_calls() {
    let (functions, code) = program();
    let bodies = decode(&functions, &code);
    let policy = Policy {
        kernel_call_allowance: 1000,
        ..Policy::default()
    };
    let d = deepest(&functions, &bodies, &code, 0, &policy).unwrap();
    // f0 (48) + f1 (264) + f2 through the pointer (16; f3's 8 replaces it after the tail jump):
    // 328; the kernel call from f0 costs 48 + 1000 = 1048, deeper.
    assert_eq!(d.bytes, 1048);
    assert_eq!(d.kernel.as_deref(), Some("KeBugCheckEx"));
    let policy = Policy {
        kernel_call_allowance: 100,
        ..Policy::default()
    };
    let d = deepest(&functions, &bodies, &code, 0, &policy).unwrap();
    assert_eq!(d.bytes, 48 + 264 + 16);
    assert_eq!(d.path, [(0, false), (1, false), (2, true)]);
    assert_eq!(
        d.indirect_targets, 1,
        "only f2's address is taken; f4 is unreachable"
    );
    // The entry points are not indirect targets: without f2, f1's pointer call reaches nothing.
    let mut policy = policy;
    policy.not_indirect_targets.insert(2);
    let d = deepest(&functions, &bodies, &code, 0, &policy).unwrap();
    assert_eq!(d.bytes, 48 + 264);
}

#[test]
fn a_vtable_in_data_makes_its_methods_indirect_targets() {
    let (functions, mut code) = program();
    // f0 references a vtable at 0x5000 holding [drop = f3, size, align, method = f4].
    code.pointers.insert(0x5000, 0x10C0);
    code.pointers.insert(0x5018, 0x1100);
    let mut bodies = decode(&functions, &code);
    bodies[0].data_refs.insert(0x5000);
    let policy = Policy::default();
    let d = deepest(&functions, &bodies, &code, 0, &policy).unwrap();
    // f1's pointer call may now reach f4 (128), deeper than f2.
    assert_eq!(d.bytes, 48 + 264 + 128);
    assert_eq!(d.path.last(), Some(&(4, true)));
}

#[test]
fn a_virtual_call_reaches_only_methods_in_its_slot() {
    let (functions, mut code) = program();
    // f1's `call rax` becomes `call [rax+0x18]`: slot 3 of a vtable.
    let off = (0x1040 + 7 - TEXT) as usize;
    code.text.splice(off..off + 2, [0xFF, 0x50, 0x18]);
    // f0 references a vtable with f4 in slot 4 (not 3): out of reach; then in slot 3: reached.
    code.pointers.insert(0x5020, 0x1100);
    let mut bodies = decode(&functions, &code);
    bodies[0].data_refs.insert(0x5000);
    assert_eq!(
        bodies[1].indirect_slots.iter().copied().collect::<Vec<_>>(),
        [Some(3)]
    );
    let policy = Policy::default();
    let d = deepest(&functions, &bodies, &code, 0, &policy).unwrap();
    assert!(d.path.iter().all(|&(f, _)| f != 4), "{:?}", d.path);
    code.pointers.remove(&0x5020);
    code.pointers.insert(0x5018, 0x1100);
    let d = deepest(&functions, &bodies, &code, 0, &policy).unwrap();
    assert_eq!(d.path.last(), Some(&(4, true)));
}

#[test]
fn recursion_is_refused_unless_bounded() {
    let mut a = Asm { text: Vec::new() };
    let p = a.rel(0x1000, &[0xE8], 0x1040);
    a.at(p, &[0xC3]);
    let p = a.rel(0x1040, &[0xE8], 0x1000);
    a.at(p, &[0xC3]);
    let p = a.rel(0x1080, &[0xE8], 0x1080); // calls itself
    a.at(p, &[0xC3]);
    let functions = vec![
        f("a", 0x1000, 40),
        f("b", 0x1040, 24),
        f("self", 0x1080, 100),
    ];
    let code = Code {
        text_rva: TEXT,
        text: a.text,
        ..Code::default()
    };
    let bodies = decode(&functions, &code);
    let e = deepest(&functions, &bodies, &code, 0, &Policy::default()).unwrap_err();
    assert_eq!(e.cycle, [0, 1]);
    assert!(deepest(&functions, &bodies, &code, 2, &Policy::default()).is_err());
    let policy = Policy {
        bounded_recursion: HashMap::from([(2, 10)]),
        ..Policy::default()
    };
    assert_eq!(
        deepest(&functions, &bodies, &code, 2, &policy)
            .unwrap()
            .bytes,
        1000
    );
}

#[test]
fn unwind_information_gives_the_frame() {
    // UNWIND_INFO v1: prolog 16 bytes, 4 slots: ALLOC_LARGE (slot: 0x40 * 8 = 512), ALLOC_SMALL
    // info 3 (32), PUSH_NONVOL (8).
    let mut info = vec![0x01, 16, 4, 0];
    info.extend_from_slice(&[12, 0x01, 0x40, 0x00]); // op 1, info 0; next slot 0x0040
    info.extend_from_slice(&[8, 0x32]); // op 2, info 3
    info.extend_from_slice(&[1, 0x00]); // op 0 (push)
    let blocks: HashMap<u32, Vec<u8>> = HashMap::from([(0x2000, info.clone())]);
    let read = |rva: u32, len: usize| -> Option<Vec<u8>> {
        blocks.iter().find_map(|(&at, b)| {
            let off = rva.checked_sub(at)? as usize;
            b.get(off..off + len).map(<[u8]>::to_vec)
        })
    };
    assert_eq!(unwind_bytes(&read, 0x2000), Some(552));

    // Chained: a fragment whose own codes push one register, chained to the block above.
    let mut chained = vec![0x01 | (0x4 << 3), 4, 1, 0];
    chained.extend_from_slice(&[2, 0x00, 0, 0]); // one code, padded to an even count
    chained.extend_from_slice(&0x1000u32.to_le_bytes());
    chained.extend_from_slice(&0x1100u32.to_le_bytes());
    chained.extend_from_slice(&0x2000u32.to_le_bytes());
    let blocks2: HashMap<u32, Vec<u8>> = HashMap::from([(0x2000, info), (0x2100, chained)]);
    let read2 = |rva: u32, len: usize| -> Option<Vec<u8>> {
        blocks2.iter().find_map(|(&at, b)| {
            let off = rva.checked_sub(at)? as usize;
            b.get(off..off + len).map(<[u8]>::to_vec)
        })
    };
    assert_eq!(unwind_bytes(&read2, 0x2100), Some(560));
    // An unknown operation is not guessed at.
    let bad: HashMap<u32, Vec<u8>> = HashMap::from([(0x2000, vec![1, 0, 1, 0, 0, 0x0F])]);
    let read3 = |rva: u32, len: usize| -> Option<Vec<u8>> {
        let b = bad.get(&0x2000)?;
        let off = rva.checked_sub(0x2000)? as usize;
        b.get(off..off + len).map(<[u8]>::to_vec)
    };
    assert_eq!(unwind_bytes(&read3, 0x2000), None);
}

/// An import address table with the kernel's routines the analysis knows by name.
const IAT_CHKSTK: u32 = 0x3008;
const IAT_EXPAND: u32 = 0x3010;

fn code(text: Vec<u8>) -> Code {
    Code {
        text_rva: TEXT,
        text,
        imports: HashMap::from([
            (IAT_SLOT, "KeBugCheckEx".to_string()),
            (IAT_CHKSTK, "__chkstk".to_string()),
            (IAT_EXPAND, "KeExpandKernelStackAndCallout".to_string()),
        ]),
        pointers: BTreeMap::new(),
    }
}

#[test]
fn the_prologue_gives_the_frame_pushes_allocation_and_stack_probe() {
    let mut a = Asm { text: Vec::new() };
    // push rbx; push rsi; sub rsp, 0x28; call [rip+IAT]; ...
    let p = a.at(0x1000, &[0x53, 0x56, 0x48, 0x83, 0xEC, 0x28]);
    a.rel(p, &[0xFF, 0x15], IAT_SLOT);
    // push rbp; push rdi; mov eax, 0x3010; call [rip+__chkstk]; sub rsp, rax; lea rbp, [rsp+0x80]
    let p = a.at(0x1040, &[0x55, 0x57, 0xB8, 0x10, 0x30, 0x00, 0x00]);
    let p = a.rel(p, &[0xFF, 0x15], IAT_CHKSTK);
    let p = a.at(
        p,
        &[0x48, 0x29, 0xC4, 0x48, 0x8D, 0xAC, 0x24, 0x80, 0, 0, 0],
    );
    a.at(p, &[0xC3]);
    // push rbp; mov rbp, rsp; and rsp, -32; sub rsp, 0x100; ret
    a.at(
        0x1080,
        &[
            0x55, 0x48, 0x89, 0xE5, 0x48, 0x83, 0xE4, 0xE0, 0x48, 0x81, 0xEC, 0, 1, 0, 0, 0xC3,
        ],
    );
    // A leaf: ret. An epilogue is not a prologue: add rsp, 0x28; ret.
    a.at(0x10C0, &[0xC3]);
    a.at(0x1100, &[0x48, 0x83, 0xC4, 0x28, 0xC3]);
    let code = code(a.text);
    let p = prologue(&code, 0x1000, 0x40);
    assert_eq!((p.pushes, p.allocation, p.probed), (16, 0x28, false));
    assert_eq!(p.frame(), 8 + 16 + 0x28);
    let p = prologue(&code, 0x1040, 0x40);
    assert_eq!((p.pushes, p.allocation, p.probed), (16, 0x3010, true));
    assert_eq!(p.frame(), 8 + 16 + 0x3010);
    let p = prologue(&code, 0x1080, 0x40);
    assert_eq!(p.frame(), 8 + 8 + 24 + 0x100, "{p:?}");
    assert_eq!(prologue(&code, 0x10C0, 0x40).frame(), 8);
    assert_eq!(prologue(&code, 0x1100, 0x40).frame(), 8);

    // The stack probe is not a kernel call; the kernel routine after it is.
    let functions = vec![f("plain", 0x1000, 64), f("probed", 0x1040, 8 + 16 + 0x3010)];
    let bodies = decode(&functions, &code);
    assert!(bodies[1].imports.is_empty(), "{:?}", bodies[1].imports);
    assert_eq!(bodies[1].stack_probes, 1);
    assert!(bodies[0].imports.contains("KeBugCheckEx"));
    let policy = Policy {
        kernel_call_allowance: 1000,
        ..Policy::default()
    };
    assert_eq!(
        deepest(&functions, &bodies, &code, 1, &policy)
            .unwrap()
            .bytes,
        0x3010 + 24
    );
    assert_eq!(
        deepest(&functions, &bodies, &code, 0, &policy)
            .unwrap()
            .bytes,
        64 + 1000
    );
}

#[test]
fn the_expanded_stack_size_is_read_from_the_call() {
    let mut a = Asm { text: Vec::new() };
    // mov r8d, 0x10000; lea rdx, [rsp+0x20]; call [rip+KeExpandKernelStackAndCallout]
    let p = a.at(
        0x1000,
        &[
            0x41, 0xB8, 0x00, 0x00, 0x01, 0x00, 0x48, 0x8D, 0x54, 0x24, 0x20,
        ],
    );
    let p = a.rel(p, &[0xFF, 0x15], IAT_EXPAND);
    // The same with r8 loaded from memory: unknown.
    let p = a.at(p, &[0x4C, 0x8B, 0x01]); // mov r8, [rcx]
    let p = a.rel(p, &[0xFF, 0x15], IAT_EXPAND);
    a.at(p, &[0xC3]);
    let code = code(a.text);
    let bodies = decode(&[f("driver_entry", 0x1000, 8)], &code);
    assert_eq!(bodies[0].stack_expansions, [Some(0x10000), None]);
}

#[test]
fn a_call_through_a_register_reads_the_slot_it_was_loaded_from() {
    let mut a = Asm { text: Vec::new() };
    // mov rax, [rcx+0x18]; test rax, rax; je +2; call rax  (slot 3, across a conditional branch)
    let p = a.at(
        0x1000,
        &[
            0x48, 0x8B, 0x41, 0x18, 0x48, 0x85, 0xC0, 0x74, 0x02, 0xFF, 0xD0,
        ],
    );
    a.at(p, &[0xC3]);
    // test rcx, rcx; je L; mov rax, [rcx+0x18]; L: call rax (a label: what rax holds is not
    // known there)
    let p = a.at(
        0x1040,
        &[
            0x48, 0x85, 0xC9, 0x74, 0x04, 0x48, 0x8B, 0x41, 0x18, 0xFF, 0xD0,
        ],
    );
    a.at(p, &[0xC3]);
    // mov rbx, [rcx+0x20]; call [rip+KeBugCheckEx]; call rbx (rbx survives a call: slot 4);
    // mov rax, [rcx+0x20]; call [rip+KeBugCheckEx]; call rax (rax does not: unknown)
    let p = a.at(0x1080, &[0x48, 0x8B, 0x59, 0x20]);
    let p = a.rel(p, &[0xFF, 0x15], IAT_SLOT);
    let p = a.at(p, &[0xFF, 0xD3, 0x48, 0x8B, 0x41, 0x20]);
    let p = a.rel(p, &[0xFF, 0x15], IAT_SLOT);
    a.at(p, &[0xFF, 0xD0, 0xC3]);
    // call [rsp+0x40]: a pointer kept in the frame reads no known slot. call [rcx+0x40]: slot 8;
    // mov rax, [rsp+0x18]; call rax: from the frame again.
    a.at(0x10C0, &[0xFF, 0x54, 0x24, 0x40, 0xC3]);
    a.at(
        0x1100,
        &[
            0xFF, 0x51, 0x40, 0x48, 0x8B, 0x44, 0x24, 0x18, 0xFF, 0xD0, 0xC3,
        ],
    );
    let code = code(a.text);
    let functions = vec![
        f("a", 0x1000, 8),
        f("b", 0x1040, 8),
        f("c", 0x1080, 8),
        f("d", 0x10C0, 8),
        f("e", 0x1100, 8),
    ];
    let bodies = decode(&functions, &code);
    let slots = |i: usize| bodies[i].indirect_slots.iter().copied().collect::<Vec<_>>();
    assert_eq!(slots(0), [Some(3)]);
    assert_eq!(slots(1), [None]);
    assert_eq!(slots(2), [None, Some(4)]);
    assert_eq!(slots(3), [None]);
    assert_eq!(slots(4), [None, Some(8)]);
    assert_eq!(bodies[4].indirect_calls, 2);
}

#[test]
fn a_jump_to_another_function_is_a_tail_call_only_after_an_epilogue() {
    let mut a = Asm { text: Vec::new() };
    // sub rsp, 0x28; ...; add rsp, 0x28; jmp callee: a tail call.
    let p = a.at(0x1000, &[0x48, 0x83, 0xEC, 0x28, 0x48, 0x83, 0xC4, 0x28]);
    a.rel(p, &[0xE9], 0x10C0);
    // sub rsp, 0x28; jmp callee (the frame still allocated): counted as a call.
    let p = a.at(0x1040, &[0x48, 0x83, 0xEC, 0x28]);
    a.rel(p, &[0xE9], 0x10C0);
    // callee: sub rsp, 0x100; add rsp, 0x100; ret
    a.at(
        0x10C0,
        &[
            0x48, 0x81, 0xEC, 0, 1, 0, 0, 0x48, 0x81, 0xC4, 0, 1, 0, 0, 0xC3,
        ],
    );
    // A large frame that tail-jumps to a leaf: its own frame is the deepest point.
    let p = a.at(
        0x1100,
        &[0x48, 0x81, 0xEC, 0, 2, 0, 0, 0x48, 0x81, 0xC4, 0, 2, 0, 0],
    );
    a.rel(p, &[0xE9], 0x1140);
    a.at(0x1140, &[0xC3]);
    let code = code(a.text);
    let functions = vec![
        f("tail", 0x1000, 0x30),
        f("jumps", 0x1040, 0x30),
        f("callee", 0x10C0, 0x108),
        f("big", 0x1100, 0x208),
        f("leaf", 0x1140, 8),
    ];
    let bodies = decode(&functions, &code);
    assert_eq!(
        bodies[0].tail_calls.iter().copied().collect::<Vec<_>>(),
        [2]
    );
    assert!(bodies[0].calls.is_empty());
    assert_eq!(bodies[1].calls.iter().copied().collect::<Vec<_>>(), [2]);
    assert_eq!(bodies[1].unverified_tail_jumps, 1);
    let policy = Policy::default();
    assert_eq!(
        deepest(&functions, &bodies, &code, 0, &policy)
            .unwrap()
            .bytes,
        0x108
    );
    assert_eq!(
        deepest(&functions, &bodies, &code, 1, &policy)
            .unwrap()
            .bytes,
        0x30 + 0x108
    );
    assert_eq!(
        bodies[3].tail_calls.iter().copied().collect::<Vec<_>>(),
        [4]
    );
    assert_eq!(
        deepest(&functions, &bodies, &code, 3, &policy)
            .unwrap()
            .bytes,
        0x208
    );
}

/// f0 calls f1, whose `call [rax+0x18]` reads slot 3; f2 sits in slot 3 of a vtable that only
/// data refers to (a trait object kept in a global, made by code the entry does not reach); f3
/// sits in slot 4 of it.
fn global_vtable() -> (Vec<Function>, Code) {
    let mut a = Asm { text: Vec::new() };
    let p = a.rel(0x1000, &[0xE8], 0x1040);
    a.at(p, &[0xC3]);
    a.at(
        0x1040,
        &[
            0x48, 0x83, 0xEC, 0x28, 0xFF, 0x50, 0x18, 0x48, 0x83, 0xC4, 0x28, 0xC3,
        ],
    );
    a.at(
        0x1080,
        &[
            0x48, 0x81, 0xEC, 0, 2, 0, 0, 0x48, 0x81, 0xC4, 0, 2, 0, 0, 0xC3,
        ],
    );
    a.at(
        0x10C0,
        &[
            0x48, 0x81, 0xEC, 0, 4, 0, 0, 0x48, 0x81, 0xC4, 0, 4, 0, 0, 0xC3,
        ],
    );
    let mut code = code(a.text);
    // .data at 0x6000: a fat pointer (object, vtable 0x5000); the vtable at 0x5000:
    // [drop, size, align, f2, f3].
    code.pointers.insert(0x6008, 0x5000);
    code.pointers.insert(0x5018, 0x1080);
    code.pointers.insert(0x5020, 0x10C0);
    let functions = vec![
        f("entry", 0x1000, 8),
        f("virtual_call", 0x1040, 0x30),
        f("method3", 0x1080, 0x208),
        f("method4", 0x10C0, 0x408),
    ];
    (functions, code)
}

#[test]
fn a_pointer_kept_in_global_data_is_a_target_for_every_entry() {
    let (functions, code) = global_vtable();
    let bodies = decode(&functions, &code);
    let taken = image_taken(&functions, &bodies, &code);
    assert!(taken.contains(&(2, Some(3))), "{taken:?}");
    assert!(taken.contains(&(3, Some(4))), "{taken:?}");
    let d = deepest(&functions, &bodies, &code, 0, &Policy::default()).unwrap();
    // Slot 3 only: method3, not method4.
    assert_eq!(d.bytes, 8 + 0x30 + 0x208);
    assert_eq!(d.path, [(0, false), (1, false), (2, true)]);
    assert_eq!(d.site_targets.get(&1), Some(&1));
    // The narrower reading misses it: no code the entry reaches takes the vtable's address.
    let entry_only = Policy {
        targets: Targets::Entry,
        ..Policy::default()
    };
    let d = deepest(&functions, &bodies, &code, 0, &entry_only).unwrap();
    assert_eq!(d.bytes, 8 + 0x30);
    // A target reserved to other call sites is not reached from this one.
    let mut reserved = Policy::default();
    reserved.only_from.insert(2, [0].into());
    let d = deepest(&functions, &bodies, &code, 0, &reserved).unwrap();
    assert_eq!(d.bytes, 8 + 0x30);
}

#[test]
fn a_call_of_unknown_slot_reaches_function_pointers_and_what_its_callers_take() {
    let (functions, mut code) = global_vtable();
    // virtual_call's `call [rax+0x18]` becomes `call rax; nop`: no known slot.
    let off = (0x1040 + 4 - TEXT) as usize;
    code.text.splice(off..off + 3, [0xFF, 0xD0, 0x90]);
    let mut bodies = decode(&functions, &code);
    assert_eq!(
        bodies[1].indirect_slots.iter().copied().collect::<Vec<_>>(),
        [None]
    );
    // The global vtable's methods are not reached: nothing above the call takes the vtable.
    let d = deepest(&functions, &bodies, &code, 0, &Policy::default()).unwrap();
    assert_eq!(d.bytes, 8 + 0x30);
    // When the entry refers to the vtable, both methods are.
    bodies[0].data_refs.insert(0x5000);
    let d = deepest(&functions, &bodies, &code, 0, &Policy::default()).unwrap();
    assert_eq!(d.bytes, 8 + 0x30 + 0x408);
    // A function pointer taken anywhere is reached, unless only other call sites call it.
    bodies[0].data_refs.clear();
    bodies[3].address_taken.insert(2);
    let d = deepest(&functions, &bodies, &code, 0, &Policy::default()).unwrap();
    assert_eq!(d.bytes, 8 + 0x30 + 0x208);
    let mut formatter_only = Policy::default();
    formatter_only.pointer_callers.insert(2, [3].into());
    let d = deepest(&functions, &bodies, &code, 0, &formatter_only).unwrap();
    assert_eq!(d.bytes, 8 + 0x30);
}

#[test]
fn a_cycle_through_a_pointer_call_is_cut_and_reported_a_direct_one_refused() {
    let mut a = Asm { text: Vec::new() };
    // a: call b. b: lea rcx, [rip+a]... no: b takes c's address and calls through rax; c calls b.
    let p = a.rel(0x1000, &[0xE8], 0x1040);
    a.at(p, &[0xC3]);
    let p = a.rel(0x1040, &[0x48, 0x8D, 0x0D], 0x1080); // lea rcx, [rip+c]
    a.at(p, &[0xFF, 0xD0, 0xC3]); // call rax
    let p = a.rel(0x1080, &[0xE8], 0x1040); // c: call b
    a.at(p, &[0xC3]);
    let code = code(a.text);
    let functions = vec![f("a", 0x1000, 8), f("b", 0x1040, 100), f("c", 0x1080, 1000)];
    let bodies = decode(&functions, &code);
    let d = deepest(&functions, &bodies, &code, 0, &Policy::default()).unwrap();
    assert_eq!(d.bytes, 8 + 100 + 1000);
    assert_eq!(d.broken_cycles, [vec![1, 2]]);
    assert_eq!(d.cycles_on_path.len(), 1);
    // Make c's call to b the cycle's only way and b's pointer call direct: recursion.
    let mut direct = bodies.clone();
    direct[1].calls.insert(2);
    direct[1].indirect_calls = 0;
    let e = deepest(&functions, &direct, &code, 0, &Policy::default()).unwrap_err();
    assert_eq!(e.cycle, [1, 2]);
    // Unless it passes through the panic path, which ends in a bugcheck.
    let panic = Policy {
        cut_cycles_through: [2].into(),
        ..Policy::default()
    };
    assert!(deepest(&functions, &direct, &code, 0, &panic).is_ok());
}

#[test]
fn the_built_driver_is_within_its_budgets() {
    let dir = std::path::Path::new("/var/tmp/bulwark-win/out/release");
    let (image, pdb) = (
        dir.join("bulwark_driver.sys"),
        dir.join("bulwark_driver.pdb"),
    );
    if !image.exists() || !pdb.exists() {
        println!(
            "skipped: no Windows build at {} (scripts/windows-build makes it)",
            dir.display()
        );
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bulwark-stack-budget"))
        .args([
            "--image".as_ref(),
            image.as_os_str(),
            "--pdb".as_ref(),
            pdb.as_os_str(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let number = |s: &str| s.replace(',', "").parse::<u64>().unwrap();
    for entry in [
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
        "large_stack_callout",
    ] {
        // Found in the PDB, in the Windows layer ...
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(entry)
                    && l.contains("= bulwark_driver::windows::")),
            "{entry} not matched to a symbol"
        );
        // ... and measured: a row `entry kind deepest budget ok path` with a frame on its path.
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(entry) && l.contains(" -> "))
            .unwrap_or_else(|| panic!("no row for {entry}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        let kind = if entry == "large_stack_callout" {
            "large"
        } else {
            "small"
        };
        assert_eq!(cells[1], kind, "{row}");
        let (deepest, budget) = (number(cells[2]), number(cells[3]));
        assert!(deepest > 8, "{row}");
        assert!(budget >= 8192, "{row}");
        let first_frame = row.split(" (").nth(1).unwrap().split(')').next().unwrap();
        assert!(number(first_frame) >= 8, "{row}");
    }
    // Frames come from the image: the verifier's is several KiB, and the three sources agree.
    let open = stdout
        .lines()
        .find(|l| {
            l.trim_end()
                .ends_with("bulwark_loader_boot_guard::envelope::open")
        })
        .expect("envelope::open among the largest frames");
    assert!(
        number(open.split_whitespace().next().unwrap()) > 1024,
        "{open}"
    );
    assert!(
        stdout.contains(" 0 functions' sources disagree"),
        "frame sources disagree"
    );
    assert!(out.status.success(), "over budget");
}
