//! SHA-256 of files for exec-time checks, with a bounded cache so a repeated exec costs no hash.
//!
//! The hash is read through the descriptor the permission event came with (`pread`, so no new open and no new
//! permission event), in 1 MiB chunks, checking between chunks whether the verdict is still wanted: a hash whose
//! deadline passed stops reading at once instead of finishing a huge file.
//!
//! The cache is keyed by what changes when the content can have changed: `(dev, inode, mtime, ctime, size)`. A write
//! moves mtime and ctime; a file replaced by rename is another inode; `ctime` also moves on `utimensat`, so
//! restoring an old mtime does not bring back a stale entry. It is an LRU of [`DEFAULT_CACHE_ENTRIES`] entries.
//!
//! What it cannot tell: a writer that already had the file open for writing can change it between the hash and
//! the kernel loading it (the kernel denies new writers only after the exec's open); fapolicyd has the same window.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use sha2::{Digest, Sha256};

/// Entries the cache holds by default (about 120 bytes each).
pub const DEFAULT_CACHE_ENTRIES: usize = 4_096;

/// Bytes read per `pread`; the cancellation check runs between chunks.
const CHUNK: usize = 1 << 20;

/// What identifies one version of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashKey {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// `st_mtime` in nanoseconds.
    pub mtime_ns: i128,
    /// `st_ctime` in nanoseconds.
    pub ctime_ns: i128,
    /// `st_size`.
    pub size: u64,
}

impl HashKey {
    /// The key of the file open on `fd`.
    pub fn of(fd: BorrowedFd<'_>) -> Result<HashKey, Errno> {
        let st = nix::sys::stat::fstat(fd)?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Ok(HashKey {
            dev: st.st_dev,
            ino: st.st_ino,
            mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
            ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
            size: u64::try_from(st.st_size).unwrap_or(0),
        })
    }
}

/// Hits and misses, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: AtomicU64,
    /// Lookups that needed a hash.
    pub misses: AtomicU64,
}

/// A bounded LRU of content hashes.
#[derive(Debug)]
pub struct HashCache {
    capacity: usize,
    /// key -> (hex digest, last use).
    entries: HashMap<HashKey, (String, u64)>,
    /// last use -> key, oldest first.
    by_use: BTreeMap<u64, HashKey>,
    clock: u64,
}

impl HashCache {
    /// A cache of at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        HashCache { capacity: capacity.max(1), entries: HashMap::new(), by_use: BTreeMap::new(), clock: 0 }
    }

    /// The digest of `key`, marking it used.
    pub fn get(&mut self, key: &HashKey) -> Option<String> {
        self.clock += 1;
        let now = self.clock;
        let (digest, used) = self.entries.get_mut(key)?;
        self.by_use.remove(used);
        *used = now;
        self.by_use.insert(now, *key);
        Some(digest.clone())
    }

    /// Remembers `digest` for `key`, evicting the least recently used entry when full.
    pub fn insert(&mut self, key: HashKey, digest: String) {
        self.clock += 1;
        let now = self.clock;
        if let Some((_, used)) = self.entries.insert(key, (digest, now)) {
            self.by_use.remove(&used);
        }
        self.by_use.insert(now, key);
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.by_use.pop_first() else { break };
            self.entries.remove(&oldest);
        }
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// SHA-256 of the first `size` bytes of the file open on `fd` as 64 lowercase hex digits, read from offset 0 with
/// `pread`. `Ok(None)` when `keep_going` said stop between two chunks.
pub fn sha256_fd(fd: BorrowedFd<'_>, size: u64, keep_going: &dyn Fn() -> bool) -> io::Result<Option<String>> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK.min(usize::try_from(size).unwrap_or(CHUNK).max(4096))];
    let mut offset: i64 = 0;
    loop {
        if !keep_going() {
            return Ok(None);
        }
        let n = match nix::sys::uio::pread(fd, &mut buf, offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        };
        hasher.update(&buf[..n]);
        offset += i64::try_from(n).map_err(|_| io::Error::other("read size overflow"))?;
    }
    Ok(Some(hex(&hasher.finalize())))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Reads a counter (for logs and tests).
pub(crate) fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsFd;

    use super::*;

    fn key(ino: u64) -> HashKey {
        HashKey { dev: 1, ino, mtime_ns: 2, ctime_ns: 3, size: 4 }
    }

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let mut c = HashCache::new(2);
        c.insert(key(1), "a".into());
        c.insert(key(2), "b".into());
        assert_eq!(c.get(&key(1)).as_deref(), Some("a"));
        c.insert(key(3), "c".into());
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&key(2)), None, "2 was used least recently");
        assert_eq!(c.get(&key(1)).as_deref(), Some("a"));
        assert_eq!(c.get(&key(3)).as_deref(), Some("c"));
        c.insert(key(3), "c2".into());
        assert_eq!((c.len(), c.get(&key(3)).as_deref()), (2, Some("c2")));
    }

    #[test]
    fn any_change_of_the_key_is_a_miss() {
        let mut c = HashCache::new(8);
        c.insert(key(1), "a".into());
        for k in [
            HashKey { mtime_ns: 9, ..key(1) },
            HashKey { ctime_ns: 9, ..key(1) },
            HashKey { size: 9, ..key(1) },
            HashKey { dev: 9, ..key(1) },
        ] {
            assert_eq!(c.get(&k), None, "{k:?}");
        }
    }

    #[test]
    fn file_hashes_match_known_digests_and_can_be_cancelled() {
        let mut f = tempfile::tempfile().expect("temp file");
        f.write_all(b"abc").expect("write");
        let digest = sha256_fd(f.as_fd(), 3, &|| true).expect("read").expect("not cancelled");
        assert_eq!(digest, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(sha256_fd(f.as_fd(), 3, &|| false).expect("read"), None);
        let empty = tempfile::tempfile().expect("temp file");
        let digest = sha256_fd(empty.as_fd(), 0, &|| true).expect("read").expect("done");
        assert_eq!(digest, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let k = HashKey::of(f.as_fd()).expect("fstat");
        assert_eq!(k.size, 3);
    }
}
