//! A heap-allocation counter: a `GlobalAlloc` wrapper around `System` that counts, per
//! thread, every `alloc` and every `realloc` (a growing Vec or String is an allocation
//! event too). A binary or test opts in with
//! `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.
//!
//! Per thread, so that the test harness's own threads (and other tests running in
//! parallel) do not show up in a measurement.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // `const` initialisation and a `Copy` type without Drop: reading it never allocates
    // and registers no destructor, which an allocator must not do.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// The counting allocator. It forwards everything to [`System`].
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

fn bump() {
    // `try_with`: during thread teardown the slot may be gone; such allocations are
    // not inside any measurement, so dropping them from the count is right.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the only addition is a thread-local counter that neither
// allocates nor unwinds.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: the caller's guarantees on `layout` are passed through to `System`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this wrapper with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: `ptr`, `layout` and `new_size` meet `realloc`'s contract per the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations (allocs + reallocs) made by this thread so far. Only meaningful when
/// [`CountingAlloc`] is the global allocator; otherwise it stays 0.
pub fn allocations() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Runs `f` and returns its result with the number of allocations it made.
pub fn count<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = allocations();
    let r = f();
    (r, allocations() - before)
}
