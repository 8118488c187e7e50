//! No allocation on an event's path can fail into a bugcheck: a counting allocator fails the
//! first, then the second, ... then the last allocation the driver core makes for one event, and
//! each time the event is dropped and counted, nothing panics or aborts (an infallible allocation
//! that failed would abort this test process through `handle_alloc_error`, as wdk-panic turns it
//! into `KeBugCheckEx` in the kernel), and the sensor goes on working.
//!
//! The events are the most expensive the builders make: an NT path that is rewritten, the longest
//! command line, a SID written out, a parent from the process table, a registry string value.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bulwark_driver_core::content::Content;
use bulwark_driver_core::events::{
    reg_type, ImageLoadFacts, ProcessCreateFacts, RegistryFacts, RegistryOp,
};
use bulwark_driver_core::identity::Sid;
use bulwark_driver_core::paths::VolumeMap;
use bulwark_driver_core::sensor::{Capacities, Sensor};
use bulwark_interpreter::build::{Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::{verify, Action, Case, EventType, Level, StrOp};
use bulwark_protocol::ContentSource;

/// Fails this thread's `n`th allocation (counting from 0) while armed, and counts them.
struct FailNth;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static SEEN: Cell<u64> = const { Cell::new(0) };
    static FAIL_AT: Cell<u64> = const { Cell::new(u64::MAX) };
    static FAILED: Cell<bool> = const { Cell::new(false) };
}

impl FailNth {
    /// Whether this allocation is to fail.
    fn fail_this() -> bool {
        if !ARMED.with(Cell::get) {
            return false;
        }
        let n = SEEN.with(|s| {
            let n = s.get();
            s.set(n + 1);
            n
        });
        let fail = n == FAIL_AT.with(Cell::get);
        if fail {
            FAILED.with(|f| f.set(true));
        }
        fail
    }
}

// SAFETY: every call is passed on to `System` unchanged, or answered with null, which the
// `GlobalAlloc` contract allows for any allocation that cannot be satisfied.
unsafe impl GlobalAlloc for FailNth {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::fail_this() {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::fail_this() {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::fail_this() {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: FailNth = FailNth;

/// Runs `f` with this thread's allocation `fail_at` failing (`None`: none fails); returns how many
/// allocations `f` made and whether one failed.
fn with_failure<R>(fail_at: Option<u64>, f: impl FnOnce() -> R) -> (R, u64, bool) {
    SEEN.with(|s| s.set(0));
    FAILED.with(|s| s.set(false));
    FAIL_AT.with(|s| s.set(fail_at.unwrap_or(u64::MAX)));
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    (r, SEEN.with(Cell::get), FAILED.with(Cell::get))
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

/// Content with one blocking rule per event type, each matching the events below, blessed.
fn sensor() -> Sensor {
    let mut b = PackBuilder::new();
    for (event_type, field, needle) in [
        (EventType::ProcessCreation, "CommandLine", "payload"),
        (EventType::ImageLoad, "ImageLoaded", "evil"),
        (EventType::RegistryEvent, "Details", "evil"),
    ] {
        b.rule(RuleSpec {
            event_type,
            id: format!("{event_type:?}"),
            title: format!("{event_type:?}"),
            author: "Bulwark tests".into(),
            level: Level::High,
            action: Action::Block,
            tags: vec![],
            expr: Expr::Pred(Pred::Str {
                field: event_type.field_by_name(field).unwrap().index,
                op: StrOp::Contains,
                case: Case::Insensitive,
                value: needle.into(),
            }),
        })
        .unwrap();
    }
    let sensor = Sensor::new(Capacities::default(), 1, 1).unwrap();
    let mut volumes = VolumeMap::default();
    volumes.insert('C', "\\Device\\HarddiskVolume3").unwrap();
    sensor.set_volumes(volumes);
    sensor.install(
        Content {
            pack: verify(&b.finish()).unwrap(),
            channel: 1,
            version: 1,
            hash: [1; 32],
            source: ContentSource::LastKnownGood,
        },
        &mut || {},
    );
    sensor
}

struct Inputs {
    parent_image: Vec<u16>,
    image: Vec<u16>,
    command_line: Vec<u16>,
    dll: Vec<u16>,
    key: Vec<u16>,
    value: Vec<u16>,
    data: Vec<u8>,
}

fn inputs() -> Inputs {
    Inputs {
        parent_image: utf16("\\Device\\HarddiskVolume3\\Windows\\explorer.exe"),
        image: utf16(&format!(
            "\\Device\\HarddiskVolume3\\Users\\bob\\{}\\x.exe",
            "dir\\".repeat(200)
        )),
        // Longer than the field: decoded up to its limit.
        command_line: utf16(&format!("x.exe payload {}", "é".repeat(20_000))),
        dll: utf16("\\Device\\HarddiskVolume3\\Users\\bob\\evil.dll"),
        key: utf16("\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet001\\Services\\Evil"),
        value: utf16("ImagePath"),
        data: "C:\\evil.exe \0"
            .repeat(100)
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect(),
    }
}

const SUB_AUTHORITIES: [u32; 15] = [u32::MAX; 15];

fn process<'a>(i: &'a Inputs, pid: u32, parent: u32, image: &'a [u16]) -> ProcessCreateFacts<'a> {
    ProcessCreateFacts {
        process_id: pid,
        create_time: u64::from(pid),
        parent_process_id: parent,
        parent_create_time: Some(u64::from(parent)),
        image_file_name: Some(image),
        command_line: Some(&i.command_line),
        user: Some(Sid {
            revision: 1,
            authority: [1, 2, 3, 4, 5, 6],
            sub_authorities: &SUB_AUTHORITIES,
        }),
        integrity: Some((0x3000, false)),
        logon_id: Some(u64::MAX),
        session_id: Some(1),
    }
}

/// One event run against a sensor; true if it was seen (blocked, or a detection).
type RunEvent<'a> = Box<dyn Fn(&Sensor) -> bool + 'a>;

/// The events.
fn events(i: &Inputs) -> Vec<(&'static str, RunEvent<'_>)> {
    vec![
        (
            "process creation",
            Box::new(move |s: &Sensor| {
                s.on_process_create(&process(i, 200, 100, &i.image), 5)
                    .block
            }),
        ),
        (
            "image load",
            Box::new(move |s: &Sensor| {
                let before = s.counters().detections;
                s.on_image_load(
                    &ImageLoadFacts {
                        process_id: 100,
                        full_image_name: Some(&i.dll),
                        signature_level: 1,
                    },
                    6,
                );
                s.counters().detections > before
            }),
        ),
        (
            "registry",
            Box::new(move |s: &Sensor| {
                let before = s.counters().detections;
                s.on_registry(
                    &RegistryFacts {
                        op: RegistryOp::SetValue,
                        process_id: 100,
                        key_path: &i.key,
                        value_name: Some(&i.value),
                        data: Some((reg_type::SZ, &i.data)),
                        new_name: None,
                    },
                    7,
                );
                s.counters().detections > before
            }),
        ),
    ]
}

#[test]
fn every_allocation_of_an_event_can_fail_and_the_event_is_dropped_and_counted() {
    let i = inputs();
    for (name, event) in events(&i) {
        // The parent (process 100) is in the table, so parent fields are filled from it.
        let fresh = || {
            let s = sensor();
            s.on_process_create(&process(&i, 100, 4, &i.parent_image), 1);
            s
        };
        let s = fresh();
        let (seen, allocations, failed) = with_failure(None, || event(&s));
        assert!(
            seen && !failed,
            "{name}: the event is seen when memory is there"
        );
        assert!(allocations > 0, "{name}: the event allocates nothing?");
        assert_eq!(s.counters().events_dropped, 0);
        println!("{name}: {allocations} allocations, each failed in turn");
        for k in 0..allocations {
            let s = fresh();
            let (seen, _, failed) = with_failure(Some(k), || event(&s));
            assert!(failed, "{name}: allocation {k} was not made");
            assert!(
                !seen,
                "{name}: allocation {k} failed, yet the event was evaluated"
            );
            let c = s.counters();
            assert_eq!(c.events_dropped, 1, "{name}: allocation {k}: not counted");
            assert_eq!(c.blocked, 0, "{name}: a dropped event blocked");
            // The sensor goes on: the same event, with memory, is seen.
            assert!(
                event(&s),
                "{name}: after a failure at {k}, the next event is lost"
            );
            assert_eq!(s.counters().events_dropped, 1);
        }
    }
}

#[test]
fn a_sensor_that_cannot_get_its_tables_is_refused_not_aborted() {
    // The tables are claimed fallibly before anything that cannot fail is allocated: failing
    // each of those claims gives an error.
    let (_, allocations, _) = with_failure(None, || Sensor::new(Capacities::default(), 1, 1));
    assert!(allocations > 5);
    // The two rings, the table's slots, its spare list, and the claim for its entries.
    for k in 0..5 {
        let (r, _, failed) = with_failure(Some(k), || Sensor::new(Capacities::default(), 1, 1));
        assert!(failed);
        assert!(r.is_err(), "allocation {k} failed, yet the sensor was made");
    }
}
