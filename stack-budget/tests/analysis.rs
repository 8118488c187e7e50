//! The analysis on hand-assembled x64 code, and on the real driver image when it has been built.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, HashMap};

use stack_budget::{decode, deepest, unwind_bytes, Code, Function, Policy};

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
    for entry in [
        "driver_entry",
        "on_process",
        "on_registry",
        "dispatch_ioctl",
        "worker",
        "large_stack_callout",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(entry)),
            "{entry} missing from the report"
        );
    }
    assert!(
        stdout.contains("envelope::open"),
        "frames are read from the image"
    );
    assert!(out.status.success(), "over budget");
}
