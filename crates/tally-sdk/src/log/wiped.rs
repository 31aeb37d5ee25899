//! A value whose memory is zeroed when it is dropped.
//!
//! For key schedules of libraries that do not wipe their own: ring's AEAD
//! keys keep their expanded key in plain fields with no `Drop`. The value
//! lives in a heap slot of its own, so it is never moved after [`Wiped::new`]
//! (a move would leave a copy behind that nothing wipes), and dropping the
//! wrapper drops the value in place, then overwrites the slot with zeros
//! through a volatile write the compiler cannot elide.
//!
//! What it cannot reach: copies made while the value was built, before it
//! entered the slot (stack temporaries the next calls overwrite). The same
//! limit applies to every `zeroize` user.
//!
//! This is the crate's only unsafe code: two calls that rely on the slot
//! being initialised from `new` until `drop`, which the type guarantees by
//! never exposing the slot.
#![allow(unsafe_code)]

use std::fmt;
use std::mem::MaybeUninit;
use std::ops::Deref;
use std::sync::atomic::{compiler_fence, Ordering};

use zeroize::Zeroize;

/// A `T` in a heap slot that is zeroed when the wrapper is dropped.
pub(crate) struct Wiped<T> {
    /// Initialised from `new` until `drop`; never handed out.
    slot: Box<MaybeUninit<T>>,
}

impl<T> Wiped<T> {
    /// Moves `value` into its slot (the last move it ever makes).
    pub(crate) fn new(value: T) -> Wiped<T> {
        let mut slot = Box::new_uninit();
        slot.write(value);
        Wiped { slot }
    }
}

impl<T> Deref for Wiped<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: `slot` is written in `new` and de-initialised only in
        // `drop`, after which `self` is never used.
        unsafe { self.slot.assume_init_ref() }
    }
}

impl<T> Drop for Wiped<T> {
    fn drop(&mut self) {
        wipe(&mut self.slot);
    }
}

impl<T> fmt::Debug for Wiped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Wiped(..)")
    }
}

/// Drops the value in `slot` in place, then zeroes every byte of the slot.
///
/// The slot must hold an initialised value, and is uninitialised (all
/// zero bytes) afterwards.
fn wipe<T>(slot: &mut MaybeUninit<T>) {
    // SAFETY: the caller's slot is initialised (see `Wiped`), and the value
    // is dropped exactly once: the slot is only zeroed after this.
    unsafe { slot.assume_init_drop() };
    slot.zeroize();
    compiler_fence(Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn wiping_drops_the_value_once_and_leaves_only_zeros() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        struct Schedule([u64; 8]);
        impl Drop for Schedule {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::SeqCst);
            }
        }

        let mut slot = MaybeUninit::new(Schedule([0xA5A5_A5A5_A5A5_A5A5; 8]));
        wipe(&mut slot);
        assert_eq!(DROPS.load(Ordering::SeqCst), 1);
        // SAFETY: `wipe` left the slot all zero bytes, a valid `[u64; 8]`;
        // it is read as that, not as `Schedule`, whose drop must not run
        // again.
        let left: [u64; 8] = unsafe { std::mem::transmute_copy(&slot) };
        assert_eq!(left, [0; 8]);

        let wrapped = Wiped::new(Schedule([7; 8]));
        assert_eq!(wrapped.0, [7; 8]);
        drop(wrapped);
        assert_eq!(DROPS.load(Ordering::SeqCst), 2);
    }
}
