//! The real libc functions behind the hooks, found once with `dlsym(RTLD_NEXT, ..)`.
//!
//! All of them are resolved by a constructor when the library is loaded, before `main` and before any thread or
//! child exists, so the hook path normally only loads an atomic pointer. `dlsym` takes the loader's lock and may
//! allocate for its error message, which must not happen in a child forked from a threaded process, so the lazy
//! path in [`RealFn::get`] is only a fallback for a caller that runs before the constructor (another library's
//! constructor calling exec).

use core::ffi::{CStr, c_char, c_int, c_uint, c_void};
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

/// `open(path, flags, ...)`, `open64`: called with the mode as the variadic third argument, which the callee
/// reads only when the flags create.
pub(crate) type OpenFn = unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int;
/// `openat(dirfd, path, flags, ...)`, `openat64`.
pub(crate) type OpenatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int;
/// `__open_2(path, flags)`, `__open64_2`.
pub(crate) type Open2Fn = unsafe extern "C" fn(*const c_char, c_int) -> c_int;
/// `__openat_2(dirfd, path, flags)`, `__openat64_2`, and `unlinkat(dirfd, path, flags)`.
pub(crate) type DirfdPathIntFn = unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int;
/// `creat(path, mode)`, `creat64`, `chmod(path, mode)`, `mkdir(path, mode)`.
pub(crate) type PathModeFn = unsafe extern "C" fn(*const c_char, libc::mode_t) -> c_int;
/// `fopen(path, mode)`, `fopen64`.
pub(crate) type FopenFn = unsafe extern "C" fn(*const c_char, *const c_char) -> *mut libc::FILE;
/// `unlink(path)`, `rmdir(path)`, `remove(path)`.
pub(crate) type PathFn = unsafe extern "C" fn(*const c_char) -> c_int;
/// `rename(old, new)`.
pub(crate) type RenameFn = unsafe extern "C" fn(*const c_char, *const c_char) -> c_int;
/// `renameat(olddirfd, old, newdirfd, new)`.
pub(crate) type RenameatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, *const c_char) -> c_int;
/// `renameat2(olddirfd, old, newdirfd, new, flags)`.
pub(crate) type Renameat2Fn = unsafe extern "C" fn(c_int, *const c_char, c_int, *const c_char, c_uint) -> c_int;
/// `truncate(path, length)`, `truncate64` (off_t is 64-bit on the 64-bit targets this library builds for).
pub(crate) type TruncateFn = unsafe extern "C" fn(*const c_char, i64) -> c_int;
/// `fchmod(fd, mode)`.
pub(crate) type FchmodFn = unsafe extern "C" fn(c_int, libc::mode_t) -> c_int;
/// `fchmodat(dirfd, path, mode, flags)`.
pub(crate) type FchmodatFn = unsafe extern "C" fn(c_int, *const c_char, libc::mode_t, c_int) -> c_int;
/// `mkdirat(dirfd, path, mode)`.
pub(crate) type MkdiratFn = unsafe extern "C" fn(c_int, *const c_char, libc::mode_t) -> c_int;
/// `link(old, new)` and `symlink(target, linkpath)`.
pub(crate) type TwoPathFn = unsafe extern "C" fn(*const c_char, *const c_char) -> c_int;
/// `linkat(olddirfd, old, newdirfd, new, flags)`.
pub(crate) type LinkatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, *const c_char, c_int) -> c_int;
/// `symlinkat(target, newdirfd, linkpath)`.
pub(crate) type SymlinkatFn = unsafe extern "C" fn(*const c_char, c_int, *const c_char) -> c_int;
/// `chown(path, uid, gid)`, `lchown`.
pub(crate) type ChownFn = unsafe extern "C" fn(*const c_char, libc::uid_t, libc::gid_t) -> c_int;
/// `fchownat(dirfd, path, uid, gid, flags)`.
pub(crate) type FchownatFn = unsafe extern "C" fn(c_int, *const c_char, libc::uid_t, libc::gid_t, c_int) -> c_int;
/// `fchown(fd, uid, gid)`.
pub(crate) type FchownFn = unsafe extern "C" fn(c_int, libc::uid_t, libc::gid_t) -> c_int;

/// `connect(fd, addr, len)`.
pub(crate) type ConnectFn = unsafe extern "C" fn(c_int, *const libc::sockaddr, libc::socklen_t) -> c_int;
/// `sendto(fd, buf, len, flags, addr, addrlen)`.
pub(crate) type SendtoFn = unsafe extern "C" fn(
    c_int,
    *const c_void,
    libc::size_t,
    c_int,
    *const libc::sockaddr,
    libc::socklen_t,
) -> libc::ssize_t;
/// `sendmsg(fd, msg, flags)`.
pub(crate) type SendmsgFn = unsafe extern "C" fn(c_int, *const libc::msghdr, c_int) -> libc::ssize_t;
/// `getaddrinfo(node, service, hints, res)`.
pub(crate) type GetaddrinfoFn =
    unsafe extern "C" fn(*const c_char, *const c_char, *const libc::addrinfo, *mut *mut libc::addrinfo) -> c_int;
/// `gethostbyname(name)`.
pub(crate) type GethostbynameFn = unsafe extern "C" fn(*const c_char) -> *mut libc::hostent;
/// `gethostbyname2(name, af)`.
pub(crate) type Gethostbyname2Fn = unsafe extern "C" fn(*const c_char, c_int) -> *mut libc::hostent;
/// `utime(path, times)`.
pub(crate) type UtimeFn = unsafe extern "C" fn(*const c_char, *const libc::utimbuf) -> c_int;
/// `utimes(path, times[2])`.
pub(crate) type UtimesFn = unsafe extern "C" fn(*const c_char, *const libc::timeval) -> c_int;
/// `utimensat(dirfd, path, times[2], flags)`.
pub(crate) type UtimensatFn = unsafe extern "C" fn(c_int, *const c_char, *const libc::timespec, c_int) -> c_int;
/// `futimens(fd, times[2])`.
pub(crate) type FutimensFn = unsafe extern "C" fn(c_int, *const libc::timespec) -> c_int;
/// `mknod(path, mode, dev)`.
pub(crate) type MknodFn = unsafe extern "C" fn(*const c_char, libc::mode_t, libc::dev_t) -> c_int;
/// `mknodat(dirfd, path, mode, dev)`.
pub(crate) type MknodatFn = unsafe extern "C" fn(c_int, *const c_char, libc::mode_t, libc::dev_t) -> c_int;
/// `stat(path, buf)`, `lstat`.
pub(crate) type StatFn = unsafe extern "C" fn(*const c_char, *mut libc::stat) -> c_int;
/// `stat64(path, buf)`, `lstat64`.
pub(crate) type Stat64Fn = unsafe extern "C" fn(*const c_char, *mut libc::stat64) -> c_int;
/// `fstatat(dirfd, path, buf, flags)`.
pub(crate) type FstatatFn = unsafe extern "C" fn(c_int, *const c_char, *mut libc::stat, c_int) -> c_int;
/// `fstatat64(dirfd, path, buf, flags)`.
pub(crate) type Fstatat64Fn = unsafe extern "C" fn(c_int, *const c_char, *mut libc::stat64, c_int) -> c_int;
/// `statx(dirfd, path, flags, mask, buf)`.
pub(crate) type StatxFn = unsafe extern "C" fn(c_int, *const c_char, c_int, c_uint, *mut libc::statx) -> c_int;
/// `access(path, mode)`.
pub(crate) type AccessFn = unsafe extern "C" fn(*const c_char, c_int) -> c_int;
/// `faccessat(dirfd, path, mode, flags)`.
pub(crate) type FaccessatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, c_int) -> c_int;
/// `readlink(path, buf, size)`.
pub(crate) type ReadlinkFn = unsafe extern "C" fn(*const c_char, *mut c_char, libc::size_t) -> libc::ssize_t;
/// `readlinkat(dirfd, path, buf, size)`.
pub(crate) type ReadlinkatFn = unsafe extern "C" fn(c_int, *const c_char, *mut c_char, libc::size_t) -> libc::ssize_t;
/// `opendir(path)`.
pub(crate) type OpendirFn = unsafe extern "C" fn(*const c_char) -> *mut libc::DIR;
/// `accept(fd, addr, len)`.
pub(crate) type AcceptFn = unsafe extern "C" fn(c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> c_int;
/// `accept4(fd, addr, len, flags)`.
pub(crate) type Accept4Fn = unsafe extern "C" fn(c_int, *mut libc::sockaddr, *mut libc::socklen_t, c_int) -> c_int;
/// `listen(fd, backlog)`.
pub(crate) type ListenFn = unsafe extern "C" fn(c_int, c_int) -> c_int;
/// `close(fd)`.
pub(crate) type CloseFn = unsafe extern "C" fn(c_int) -> c_int;
/// `sendmmsg(fd, msgvec, vlen, flags)`.
pub(crate) type SendmmsgFn = unsafe extern "C" fn(c_int, *mut libc::mmsghdr, c_uint, c_int) -> c_int;

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

pub(crate) static OPEN: RealFn = RealFn::new(c"open");
pub(crate) static OPEN64: RealFn = RealFn::new(c"open64");
pub(crate) static OPENAT: RealFn = RealFn::new(c"openat");
pub(crate) static OPENAT64: RealFn = RealFn::new(c"openat64");
pub(crate) static OPEN_2: RealFn = RealFn::new(c"__open_2");
pub(crate) static OPEN64_2: RealFn = RealFn::new(c"__open64_2");
pub(crate) static OPENAT_2: RealFn = RealFn::new(c"__openat_2");
pub(crate) static OPENAT64_2: RealFn = RealFn::new(c"__openat64_2");
pub(crate) static CREAT: RealFn = RealFn::new(c"creat");
pub(crate) static CREAT64: RealFn = RealFn::new(c"creat64");
pub(crate) static FOPEN: RealFn = RealFn::new(c"fopen");
pub(crate) static FOPEN64: RealFn = RealFn::new(c"fopen64");
pub(crate) static UNLINK: RealFn = RealFn::new(c"unlink");
pub(crate) static UNLINKAT: RealFn = RealFn::new(c"unlinkat");
pub(crate) static RENAME: RealFn = RealFn::new(c"rename");
pub(crate) static RENAMEAT: RealFn = RealFn::new(c"renameat");
pub(crate) static RENAMEAT2: RealFn = RealFn::new(c"renameat2");
pub(crate) static TRUNCATE: RealFn = RealFn::new(c"truncate");
pub(crate) static TRUNCATE64: RealFn = RealFn::new(c"truncate64");
pub(crate) static CHMOD: RealFn = RealFn::new(c"chmod");
pub(crate) static FCHMOD: RealFn = RealFn::new(c"fchmod");
pub(crate) static FCHMODAT: RealFn = RealFn::new(c"fchmodat");
pub(crate) static MKDIR: RealFn = RealFn::new(c"mkdir");
pub(crate) static MKDIRAT: RealFn = RealFn::new(c"mkdirat");
pub(crate) static RMDIR: RealFn = RealFn::new(c"rmdir");
pub(crate) static REMOVE: RealFn = RealFn::new(c"remove");
pub(crate) static LINK: RealFn = RealFn::new(c"link");
pub(crate) static LINKAT: RealFn = RealFn::new(c"linkat");
pub(crate) static SYMLINK: RealFn = RealFn::new(c"symlink");
pub(crate) static SYMLINKAT: RealFn = RealFn::new(c"symlinkat");
pub(crate) static CHOWN: RealFn = RealFn::new(c"chown");
pub(crate) static LCHOWN: RealFn = RealFn::new(c"lchown");
pub(crate) static FCHOWNAT: RealFn = RealFn::new(c"fchownat");
pub(crate) static FCHOWN: RealFn = RealFn::new(c"fchown");

pub(crate) static CONNECT: RealFn = RealFn::new(c"connect");
pub(crate) static SENDTO: RealFn = RealFn::new(c"sendto");
pub(crate) static SENDMSG: RealFn = RealFn::new(c"sendmsg");
pub(crate) static GETADDRINFO: RealFn = RealFn::new(c"getaddrinfo");
pub(crate) static GETHOSTBYNAME: RealFn = RealFn::new(c"gethostbyname");
pub(crate) static GETHOSTBYNAME2: RealFn = RealFn::new(c"gethostbyname2");
pub(crate) static UTIME: RealFn = RealFn::new(c"utime");
pub(crate) static UTIMES: RealFn = RealFn::new(c"utimes");
pub(crate) static UTIMENSAT: RealFn = RealFn::new(c"utimensat");
pub(crate) static FUTIMENS: RealFn = RealFn::new(c"futimens");
pub(crate) static MKNOD: RealFn = RealFn::new(c"mknod");
pub(crate) static MKNODAT: RealFn = RealFn::new(c"mknodat");

pub(crate) static STAT: RealFn = RealFn::new(c"stat");
pub(crate) static LSTAT: RealFn = RealFn::new(c"lstat");
pub(crate) static STAT64: RealFn = RealFn::new(c"stat64");
pub(crate) static LSTAT64: RealFn = RealFn::new(c"lstat64");
pub(crate) static FSTATAT: RealFn = RealFn::new(c"fstatat");
pub(crate) static FSTATAT64: RealFn = RealFn::new(c"fstatat64");
pub(crate) static STATX: RealFn = RealFn::new(c"statx");
pub(crate) static ACCESS: RealFn = RealFn::new(c"access");
pub(crate) static FACCESSAT: RealFn = RealFn::new(c"faccessat");
pub(crate) static READLINK: RealFn = RealFn::new(c"readlink");
pub(crate) static READLINKAT: RealFn = RealFn::new(c"readlinkat");
pub(crate) static OPENDIR: RealFn = RealFn::new(c"opendir");

pub(crate) static ACCEPT: RealFn = RealFn::new(c"accept");
pub(crate) static ACCEPT4: RealFn = RealFn::new(c"accept4");
pub(crate) static CLOSE: RealFn = RealFn::new(c"close");
pub(crate) static LISTEN: RealFn = RealFn::new(c"listen");
pub(crate) static SENDMMSG: RealFn = RealFn::new(c"sendmmsg");

/// Every real function, for the constructor.
static ALL: [&RealFn; 39] = [
    &EXECVE,
    &EXECV,
    &EXECVP,
    &EXECVPE,
    &FEXECVE,
    &POSIX_SPAWN,
    &POSIX_SPAWNP,
    &OPEN,
    &OPEN64,
    &OPENAT,
    &OPENAT64,
    &OPEN_2,
    &OPEN64_2,
    &OPENAT_2,
    &OPENAT64_2,
    &CREAT,
    &CREAT64,
    &FOPEN,
    &FOPEN64,
    &UNLINK,
    &UNLINKAT,
    &RENAME,
    &RENAMEAT,
    &RENAMEAT2,
    &TRUNCATE,
    &TRUNCATE64,
    &CHMOD,
    &FCHMOD,
    &FCHMODAT,
    &MKDIR,
    &MKDIRAT,
    &RMDIR,
    &REMOVE,
    &CONNECT,
    &SENDTO,
    &SENDMSG,
    &GETADDRINFO,
    &GETHOSTBYNAME,
    &GETHOSTBYNAME2,
];

/// Resolves every real function; the library constructor calls it while the process is still single-threaded.
pub(crate) fn resolve_all() {
    for f in ALL {
        f.get();
    }
    for f in LINKS_AND_OWNERS {
        f.get();
    }
    for f in CONNECTIONS {
        f.get();
    }
    for f in SANDBOX_READS {
        f.get();
    }
    for f in TIMES_AND_NODES {
        f.get();
    }
}

/// The time-change and mknod functions, resolved with [`ALL`].
static TIMES_AND_NODES: [&RealFn; 6] = [&UTIME, &UTIMES, &UTIMENSAT, &FUTIMENS, &MKNOD, &MKNODAT];

/// The read-side path functions a user-mode sandbox redirects, resolved with [`ALL`].
static SANDBOX_READS: [&RealFn; 12] = [
    &STAT,
    &LSTAT,
    &STAT64,
    &LSTAT64,
    &FSTATAT,
    &FSTATAT64,
    &STATX,
    &ACCESS,
    &FACCESSAT,
    &READLINK,
    &READLINKAT,
    &OPENDIR,
];

/// The accept, close and sendmmsg functions, resolved with [`ALL`].
static CONNECTIONS: [&RealFn; 5] = [&ACCEPT, &ACCEPT4, &CLOSE, &SENDMMSG, &LISTEN];

/// The link and owner-change functions, resolved with [`ALL`].
static LINKS_AND_OWNERS: [&RealFn; 8] = [&LINK, &LINKAT, &SYMLINK, &SYMLINKAT, &CHOWN, &LCHOWN, &FCHOWNAT, &FCHOWN];

/// A raw system call's return value as the C function's `int`: -1 on failure (the `syscall` wrapper set errno),
/// for the fallbacks used when `dlsym` finds no real function.
pub(crate) fn sys_int(rc: core::ffi::c_long) -> c_int {
    c_int::try_from(rc).unwrap_or(-1)
}

/// [`sys_int`] for calls that return a size (`ssize_t`).
pub(crate) fn sys_size(rc: core::ffi::c_long) -> libc::ssize_t {
    libc::ssize_t::try_from(rc).unwrap_or(-1)
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
