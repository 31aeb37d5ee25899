//! The happy path of [`CompiledPlan::validate`] does not allocate: a valid
//! typical event (5 properties: a UUID format, a bounded number, an enum,
//! a bounded string, an integer; closed to other properties), an
//! unplanned event and an unknown version cost no heap allocation, so
//! validating every event on the ingest path adds no allocator traffic.
//!
//! A counting global allocator sees every allocation of this test binary;
//! the test runs alone in it (one `#[test]`), so no other thread
//! allocates while it counts.

// A GlobalAlloc is an unsafe trait: this test-only allocator forwards to
// the system allocator and counts.
#![allow(unsafe_code, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use tally_plan::{CompiledPlan, Verdict};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn valid_unplanned_and_unknown_version_events_allocate_nothing() {
    let plan =
        CompiledPlan::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plan.yaml"))
            .unwrap();
    let props = json!({
        "order_id": "0192f5e4-3c1a-7b2e-9a4d-5f6e7d8c9b0a",
        "amount": 42.5,
        "currency": "EUR",
        "coupon": "WINTER",
        "item_count": 3
    });
    // Warm up whatever is initialised once (format checkers, caches).
    assert_eq!(
        plan.validate("Order Completed", Some(2), &props),
        Verdict::Ok
    );

    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let mut verdicts = [Verdict::Unplanned, Verdict::Unplanned, Verdict::Unplanned];
    for _ in 0..1000 {
        verdicts = [
            plan.validate("Order Completed", Some(2), &props),
            plan.validate("Order Refunded", None, &props),
            plan.validate("Order Completed", Some(7), &props),
        ];
    }
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert_eq!(
        verdicts,
        [
            Verdict::Ok,
            Verdict::Unplanned,
            Verdict::UnknownVersion { version: 7 }
        ]
    );
    assert_eq!(allocations, 0);
}
