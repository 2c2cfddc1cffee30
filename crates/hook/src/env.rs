//! Environment lookups that neither allocate nor lock: a walk over a NULL-terminated `NAME=value` array.
//!
//! libc's `getenv` would do (glibc's does not allocate either), but walking the array ourselves lets the same code
//! look into the `envp` a process passes to `execve`, and keeps the hook's behaviour independent of libc details.

use core::ffi::{CStr, c_char};

use ringwatch_hook_protocol::{DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS};

unsafe extern "C" {
    /// The process's environment (POSIX).
    static environ: *const *const c_char;
}

/// Most entries looked at; a real environment has a few hundred at most.
const MAX_ENTRIES: usize = 1 << 16;

/// The current process environment.
pub(crate) fn current() -> *const *const c_char {
    // SAFETY: `environ` is a libc global that always exists; reading the pointer value is a plain load (a
    // concurrent setenv may replace it, and then we see either the old or the new array, both valid).
    unsafe { environ }
}

/// The value of `name` in `envp` (an array like `environ`), without its `NAME=` prefix.
///
/// # Safety
///
/// `envp` is null or points to a NULL-terminated array of pointers to NUL-terminated strings that stay valid and
/// unchanged for `'a`.
pub(crate) unsafe fn lookup<'a>(envp: *const *const c_char, name: &[u8]) -> Option<&'a CStr> {
    if envp.is_null() {
        return None;
    }
    for i in 0..MAX_ENTRIES {
        // SAFETY: the array is NULL-terminated (caller's contract) and we stop at the NULL, so index `i` is in it.
        let entry = unsafe { *envp.add(i) };
        if entry.is_null() {
            return None;
        }
        // SAFETY: `entry` is a NUL-terminated string (caller's contract).
        if let Some(value) = unsafe { value_if_named(entry, name) } {
            return Some(value);
        }
    }
    None
}

/// `Some(value)` when the string at `entry` is `name=value`.
///
/// # Safety
///
/// `entry` points to a NUL-terminated string valid for `'a`.
unsafe fn value_if_named<'a>(entry: *const c_char, name: &[u8]) -> Option<&'a CStr> {
    let mut i = 0usize;
    for want in name {
        // SAFETY: every byte before index `i` matched a non-NUL byte of `name`, so the string has not ended yet
        // and index `i` is at most its terminating NUL.
        let have = unsafe { *entry.add(i) } as u8;
        if have != *want {
            return None;
        }
        i = i.saturating_add(1);
    }
    // SAFETY: as above, index `i` is within the string (at most its NUL).
    if unsafe { *entry.add(i) } as u8 != b'=' {
        return None;
    }
    // SAFETY: index `i` is the '=' inside the string, so `i + 1` is at most its NUL; the rest is NUL-terminated.
    Some(unsafe { CStr::from_ptr(entry.add(i.saturating_add(1))) })
}

/// The hook's send/receive timeout in milliseconds from `RINGWATCH_HOOK_TIMEOUT_MS`: decimal, 1 to
/// [`MAX_TIMEOUT_MS`]; anything else means the default.
pub(crate) fn timeout_ms() -> u32 {
    // SAFETY: `current()` is the live process environment, which libc keeps valid; we use the value at once.
    let value = unsafe { lookup(current(), ringwatch_hook_protocol::TIMEOUT_ENV.as_bytes()) };
    value.and_then(|v| parse_ms(v.to_bytes())).unwrap_or(DEFAULT_TIMEOUT_MS)
}

fn parse_ms(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 6 {
        return None;
    }
    let mut n: u32 = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u32::from(d.wrapping_sub(b'0')))?;
    }
    (1..=MAX_TIMEOUT_MS).contains(&n).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_matches_whole_names_only() {
        let entries =
            [c"LD_PRELOAD_X=1".as_ptr(), c"LD_PRELOAD=/lib.so".as_ptr(), c"EMPTY=".as_ptr(), core::ptr::null()];
        // SAFETY: a NULL-terminated array of static C strings.
        unsafe {
            assert_eq!(lookup(entries.as_ptr(), b"LD_PRELOAD").map(CStr::to_bytes), Some(&b"/lib.so"[..]));
            assert_eq!(lookup(entries.as_ptr(), b"EMPTY").map(CStr::to_bytes), Some(&b""[..]));
            assert_eq!(lookup(entries.as_ptr(), b"LD_PRE"), None);
            assert_eq!(lookup(core::ptr::null(), b"X"), None);
        }
    }

    #[test]
    fn timeouts_parse_strictly() {
        assert_eq!(parse_ms(b"250"), Some(250));
        assert_eq!(parse_ms(b"0"), None);
        assert_eq!(parse_ms(b"99999999999"), None);
        assert_eq!(parse_ms(b"10001"), None);
        assert_eq!(parse_ms(b"1e3"), None);
        assert_eq!(parse_ms(b""), None);
    }
}
