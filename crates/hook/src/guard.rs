//! When the hook may act at all: after the library constructor ran, unless the process asked to be left alone,
//! and never inside itself.
//!
//! - [`Reentry`]: a thread-local flag set while a thread is inside the hook. A hooked function called from within
//!   the hook (its own socket, `readlink` and `getcwd` calls are not hooked, but a signal handler or a libc
//!   internal could be) goes straight to the real function. The flag is a `const` thread-local of a library
//!   loaded at start-up, so it lives in the static TLS block: reading it never allocates.
//! - [`active`]: false until the constructor has resolved the real functions (calls made earlier, by the loader
//!   or by other libraries' constructors, pass straight through) and false for good after
//!   `ringwatch_hook_bypass()` (the agent calls it on itself when the hook is installed system-wide, so it never
//!   reports to, or waits for, itself).

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, Ordering};

/// Set by the library constructor once the real functions are resolved.
static INITIALIZED: AtomicBool = AtomicBool::new(false);
/// Set by `ringwatch_hook_bypass()`.
static BYPASSED: AtomicBool = AtomicBool::new(false);

/// Marks the library ready (end of the constructor).
pub(crate) fn mark_initialized() {
    INITIALIZED.store(true, Ordering::Release);
}

/// Turns every hook into a plain call of the real function for the rest of the process's life.
pub(crate) fn bypass() {
    BYPASSED.store(true, Ordering::Release);
}

/// True when the hooks should check and report.
pub(crate) fn active() -> bool {
    INITIALIZED.load(Ordering::Acquire) && !BYPASSED.load(Ordering::Acquire)
}

/// True once `ringwatch_hook_bypass()` was called.
pub(crate) fn bypassed() -> bool {
    BYPASSED.load(Ordering::Acquire)
}

thread_local! {
    /// Set while this thread is inside the hook, so a hooked call made from within it goes straight through.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Marks the thread as inside the hook until dropped.
pub(crate) struct Reentry;

impl Reentry {
    /// `None` when the thread is already inside the hook (or its TLS is being torn down).
    pub(crate) fn enter() -> Option<Reentry> {
        IN_HOOK
            .try_with(|inside| {
                if inside.get() {
                    None
                } else {
                    inside.set(true);
                    Some(Reentry)
                }
            })
            .ok()
            .flatten()
    }
}

impl Drop for Reentry {
    fn drop(&mut self) {
        let _ = IN_HOOK.try_with(|inside| inside.set(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reentry_is_refused_until_the_guard_drops() {
        let outer = Reentry::enter();
        assert!(outer.is_some());
        assert!(Reentry::enter().is_none(), "nested entry goes straight through");
        drop(outer);
        assert!(Reentry::enter().is_some());
    }
}
