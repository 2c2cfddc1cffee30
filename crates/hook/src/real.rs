//! The real libc functions behind the hooks, found once with `dlsym(RTLD_NEXT, ..)`.
//!
//! All of them are resolved by a constructor when the library is loaded, before `main` and before any thread or
//! child exists, so the hook path normally only loads an atomic pointer. `dlsym` takes the loader's lock and may
//! allocate for its error message, which must not happen in a child forked from a threaded process, so the lazy
//! path in [`RealFn::get`] is only a fallback for a caller that runs before the constructor (another library's
//! constructor calling exec).

use core::ffi::{CStr, c_char, c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

/// `execve(path, argv, envp)` and `execvpe(file, argv, envp)`.
pub(crate) type ExecveFn = unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;
/// `execv(path, argv)` and `execvp(file, argv)`.
pub(crate) type ExecvFn = unsafe extern "C" fn(*const c_char, *const *const c_char) -> c_int;
/// `fexecve(fd, argv, envp)`.
pub(crate) type FexecveFn = unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char) -> c_int;
/// `posix_spawn(pid, path, file_actions, attr, argv, envp)` and `posix_spawnp`.
pub(crate) type PosixSpawnFn = unsafe extern "C" fn(
    *mut libc::pid_t,
    *const c_char,
    *const libc::posix_spawn_file_actions_t,
    *const libc::posix_spawnattr_t,
    *const *const c_char,
    *const *const c_char,
) -> c_int;

/// One real function: its name and, once found, its address.
pub(crate) struct RealFn {
    name: &'static CStr,
    addr: AtomicPtr<c_void>,
}

impl RealFn {
    const fn new(name: &'static CStr) -> Self {
        RealFn { name, addr: AtomicPtr::new(ptr::null_mut()) }
    }

    /// The next definition after this library, or null when there is none. Threads racing here all store the
    /// same address, so a plain load/store pair is enough.
    pub(crate) fn get(&self) -> *mut c_void {
        let addr = self.addr.load(Ordering::Acquire);
        if !addr.is_null() {
            return addr;
        }
        // SAFETY: `name` is a NUL-terminated string with static lifetime; RTLD_NEXT is a valid pseudo-handle for
        // a caller inside a loaded shared object; dlsym is thread-safe.
        let addr = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
        self.addr.store(addr, Ordering::Release);
        addr
    }
}

pub(crate) static EXECVE: RealFn = RealFn::new(c"execve");
pub(crate) static EXECV: RealFn = RealFn::new(c"execv");
pub(crate) static EXECVP: RealFn = RealFn::new(c"execvp");
pub(crate) static EXECVPE: RealFn = RealFn::new(c"execvpe");
pub(crate) static FEXECVE: RealFn = RealFn::new(c"fexecve");
pub(crate) static POSIX_SPAWN: RealFn = RealFn::new(c"posix_spawn");
pub(crate) static POSIX_SPAWNP: RealFn = RealFn::new(c"posix_spawnp");

/// Every real function, for the constructor.
static ALL: [&RealFn; 7] = [&EXECVE, &EXECV, &EXECVP, &EXECVPE, &FEXECVE, &POSIX_SPAWN, &POSIX_SPAWNP];

/// Resolves every real function; the library constructor calls it while the process is still single-threaded.
pub(crate) fn resolve_all() {
    for f in ALL {
        f.get();
    }
}

/// Turns a resolved address into a typed function pointer.
macro_rules! real_fn {
    ($real:expr, $ty:ty) => {{
        let addr = $real.get();
        if addr.is_null() {
            None
        } else {
            // SAFETY: `addr` is non-null and was returned by dlsym for the libc function whose C prototype `$ty`
            // spells; function and data pointers have the same size and representation on Linux targets.
            Some(unsafe { core::mem::transmute::<*mut core::ffi::c_void, $ty>(addr) })
        }
    }};
}
pub(crate) use real_fn;
