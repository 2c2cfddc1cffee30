//! Parser for what `read(2)` on a FID-reporting fanotify group returns: a packed run of events, each a
//! `fanotify_event_metadata` followed by info records (`fanotify_event_info_fid` + `file_handle` + optional name).
//!
//! Kernel bytes are treated like ring-buffer samples (STYLE.md): every length the kernel declares is checked against
//! what is actually there before a field is read, each layer is advanced by its declared length, structs are copied
//! out with unaligned reads, and a bad event is reported as [`Malformed`] instead of panicking. An event whose own
//! length is sane but whose records are not is skipped alone; an event whose length cannot be trusted ends the walk
//! (nothing after it can be located).
//!
//! The parser borrows from the read buffer: handles and names are slices, so a parsed event costs no allocation.

use std::mem::{offset_of, size_of};

/// `FANOTIFY_METADATA_VERSION` (linux/fanotify.h): the only layout this parser knows.
pub const METADATA_VERSION: u8 = 3;

const META_LEN: usize = size_of::<libc::fanotify_event_metadata>();
const INFO_HDR_LEN: usize = size_of::<libc::fanotify_event_info_header>();
const INFO_FID_LEN: usize = size_of::<libc::fanotify_event_info_fid>();
const HANDLE_HDR_LEN: usize = size_of::<libc::file_handle>();

// The uapi layout (linux/fanotify.h, linux/fcntl.h) as the libc crate declares it; pinned so a mistake cannot compile.
const _: () = assert!(
    META_LEN == 24
        && offset_of!(libc::fanotify_event_metadata, event_len) == 0
        && offset_of!(libc::fanotify_event_metadata, vers) == 4
        && offset_of!(libc::fanotify_event_metadata, metadata_len) == 6
        && offset_of!(libc::fanotify_event_metadata, mask) == 8
        && offset_of!(libc::fanotify_event_metadata, fd) == 16
        && offset_of!(libc::fanotify_event_metadata, pid) == 20
);
const _: () = assert!(
    INFO_HDR_LEN == 4
        && offset_of!(libc::fanotify_event_info_header, info_type) == 0
        && offset_of!(libc::fanotify_event_info_header, len) == 2
);
const _: () = assert!(
    INFO_FID_LEN == 12
        && offset_of!(libc::fanotify_event_info_fid, fsid) == 4
        && offset_of!(libc::fanotify_event_info_fid, handle) == 12
);
const _: () = assert!(
    HANDLE_HDR_LEN == 8
        && offset_of!(libc::file_handle, handle_bytes) == 0
        && offset_of!(libc::file_handle, handle_type) == 4
        && offset_of!(libc::file_handle, f_handle) == 8
);

/// Plain-old-data uapi structs: `#[repr(C)]`, integers only, every bit pattern valid.
///
/// # Safety
///
/// Implement only for types of which any byte pattern of `size_of::<Self>()` bytes is a valid value.
unsafe trait Pod: Copy {}
// SAFETY: u32 + u8 + u8 + u16 + u64 + i32 + i32, no padding (24 bytes, pinned above); any bits are valid.
unsafe impl Pod for libc::fanotify_event_metadata {}
// SAFETY: u8 + u8 + u16, no padding (4 bytes); any bits are valid.
unsafe impl Pod for libc::fanotify_event_info_header {}
// SAFETY: a 4-byte header + two i32 + a zero-length u8 array (12 bytes, pinned above); any bits are valid.
unsafe impl Pod for libc::fanotify_event_info_fid {}
// SAFETY: u32 + i32 + a zero-length u8 array (8 bytes, pinned above); any bits are valid.
unsafe impl Pod for libc::file_handle {}

/// Copies a `T` out of the start of `bytes` (any alignment); `None` when `bytes` is shorter than `T`.
fn read<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: `bytes` holds at least size_of::<T>() readable bytes (checked above), read_unaligned has no alignment
    // requirement, and T: Pod makes any byte pattern a valid T.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Why an event was discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Fewer bytes left than a metadata header, after the last whole event.
    TrailingBytes,
    /// `event_len` smaller than the metadata, or `metadata_len` outside `[24, event_len]`.
    BadEventLen,
    /// `event_len` runs past what `read` returned.
    EventPastEnd,
    /// A metadata version this parser does not know.
    Version(u8),
    /// An info record header cut short, or its `len` is smaller than a header or runs past the event.
    BadInfoLen,
    /// A FID record too short for its fsid and `file_handle` header, or `handle_bytes` runs past the record.
    BadHandle,
    /// A name-carrying record without a NUL-terminated name.
    BadName,
    /// The same info type twice in one event.
    DuplicateInfo,
}

/// One `fanotify_event_info_fid` record: a file handle on filesystem `fsid`, and for directory records the name of
/// the entry the event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fid<'a> {
    /// `__kernel_fsid_t` of the filesystem the handle belongs to.
    pub fsid: [i32; 2],
    /// `file_handle.handle_type` (filesystem specific; `FILEID_*`).
    pub handle_type: i32,
    /// `file_handle.f_handle`: exactly `handle_bytes` bytes.
    pub handle: &'a [u8],
    /// The entry name (without its NUL) for `DFID_NAME`, `OLD_DFID_NAME` and `NEW_DFID_NAME` records.
    pub name: Option<&'a [u8]>,
}

impl Fid<'_> {
    /// Writes `fsid, handle_type, handle` into `out` (cleared first): a key that names the object exactly.
    pub fn key_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.fsid[0].to_ne_bytes());
        out.extend_from_slice(&self.fsid[1].to_ne_bytes());
        out.extend_from_slice(&self.handle_type.to_ne_bytes());
        out.extend_from_slice(self.handle);
    }
}

/// One event as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawEvent<'a> {
    /// `FAN_*` bits; several when the kernel merged identical queued events.
    pub mask: u64,
    /// Thread-group id of the process that acted (`FAN_REPORT_TID` is not used).
    pub pid: i32,
    /// `FAN_NOFD` for FID groups; any other value is an open descriptor the caller must close.
    pub fd: i32,
    /// `FAN_EVENT_INFO_TYPE_DFID_NAME` (or `DFID`): the parent directory and the entry name.
    pub dir: Option<Fid<'a>>,
    /// `FAN_EVENT_INFO_TYPE_OLD_DFID_NAME`: where a renamed entry was (FAN_RENAME).
    pub old_dir: Option<Fid<'a>>,
    /// `FAN_EVENT_INFO_TYPE_NEW_DFID_NAME`: where a renamed entry went (FAN_RENAME).
    pub new_dir: Option<Fid<'a>>,
    /// `FAN_EVENT_INFO_TYPE_FID`: the object itself (the child, with `FAN_REPORT_TARGET_FID`).
    pub file: Option<Fid<'a>>,
}

/// One item of a read buffer.
#[allow(clippy::large_enum_variant)] // yielded by value from the iterator and consumed at once, never stored
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A well-formed event.
    Event(RawEvent<'a>),
    /// A discarded event; `fd` is a descriptor the kernel passed with it (to close), or `FAN_NOFD`.
    Malformed {
        /// Why.
        why: Malformed,
        /// A descriptor that came with the discarded event, if its metadata was readable.
        fd: i32,
    },
}

/// Iterates over the events in `buf` (what one `read` returned).
pub fn events(buf: &[u8]) -> Events<'_> {
    Events { rest: buf }
}

/// Iterator returned by [`events`].
#[derive(Debug)]
pub struct Events<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Events<'a> {
    type Item = Parsed<'a>;

    fn next(&mut self) -> Option<Parsed<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(meta) = read::<libc::fanotify_event_metadata>(self.rest) else {
            self.rest = &[];
            return Some(Parsed::Malformed { why: Malformed::TrailingBytes, fd: libc::FAN_NOFD });
        };
        let len = meta.event_len as usize;
        let meta_len = usize::from(meta.metadata_len);
        if len < META_LEN || meta_len < META_LEN || meta_len > len {
            self.rest = &[];
            return Some(Parsed::Malformed { why: Malformed::BadEventLen, fd: meta.fd });
        }
        let Some(event) = self.rest.get(..len) else {
            self.rest = &[];
            return Some(Parsed::Malformed { why: Malformed::EventPastEnd, fd: meta.fd });
        };
        self.rest = &self.rest[len..];
        if meta.vers != METADATA_VERSION {
            return Some(Parsed::Malformed { why: Malformed::Version(meta.vers), fd: meta.fd });
        }
        let mut ev = RawEvent { mask: meta.mask, pid: meta.pid, fd: meta.fd, ..RawEvent::default() };
        Some(match parse_infos(&event[meta_len..], &mut ev) {
            Ok(()) => Parsed::Event(ev),
            Err(why) => Parsed::Malformed { why, fd: meta.fd },
        })
    }
}

/// Walks the info records after the metadata; fills the slots of `ev`. Unknown record types (a pidfd, an error
/// record) are skipped by their declared length.
fn parse_infos<'a>(mut rest: &'a [u8], ev: &mut RawEvent<'a>) -> Result<(), Malformed> {
    while !rest.is_empty() {
        let hdr = read::<libc::fanotify_event_info_header>(rest).ok_or(Malformed::BadInfoLen)?;
        let len = usize::from(hdr.len);
        if len < INFO_HDR_LEN {
            return Err(Malformed::BadInfoLen);
        }
        let record = rest.get(..len).ok_or(Malformed::BadInfoLen)?;
        rest = &rest[len..];
        let slot = match hdr.info_type {
            libc::FAN_EVENT_INFO_TYPE_FID => &mut ev.file,
            libc::FAN_EVENT_INFO_TYPE_DFID_NAME | libc::FAN_EVENT_INFO_TYPE_DFID => &mut ev.dir,
            libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME => &mut ev.old_dir,
            libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME => &mut ev.new_dir,
            _ => continue,
        };
        if slot.is_some() {
            return Err(Malformed::DuplicateInfo);
        }
        let with_name =
            hdr.info_type != libc::FAN_EVENT_INFO_TYPE_FID && hdr.info_type != libc::FAN_EVENT_INFO_TYPE_DFID;
        *slot = Some(parse_fid(record, with_name)?);
    }
    Ok(())
}

/// One FID record: `fanotify_event_info_fid`, then `file_handle` with `handle_bytes` bytes, then (for name records)
/// a NUL-terminated name; the record may be padded after it.
fn parse_fid(record: &[u8], with_name: bool) -> Result<Fid<'_>, Malformed> {
    let info = read::<libc::fanotify_event_info_fid>(record).ok_or(Malformed::BadHandle)?;
    let after_info = &record[INFO_FID_LEN..];
    let fh = read::<libc::file_handle>(after_info).ok_or(Malformed::BadHandle)?;
    let handle_end = HANDLE_HDR_LEN.checked_add(fh.handle_bytes as usize).ok_or(Malformed::BadHandle)?;
    let handle = after_info.get(HANDLE_HDR_LEN..handle_end).ok_or(Malformed::BadHandle)?;
    let name = if with_name {
        let tail = &after_info[handle_end..];
        let nul = tail.iter().position(|b| *b == 0).ok_or(Malformed::BadName)?;
        Some(&tail[..nul])
    } else {
        None
    };
    Ok(Fid { fsid: info.fsid.val, handle_type: fh.handle_type, handle, name })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds one FID info record of `info_type` (padded to 4 bytes like the kernel does).
    pub(crate) fn fid_record(info_type: u8, fsid: [i32; 2], handle: &[u8], name: Option<&str>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&fsid[0].to_ne_bytes());
        body.extend_from_slice(&fsid[1].to_ne_bytes());
        body.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        body.extend_from_slice(&1i32.to_ne_bytes());
        body.extend_from_slice(handle);
        if let Some(n) = name {
            body.extend_from_slice(n.as_bytes());
            body.push(0);
        }
        while !(INFO_HDR_LEN + body.len()).is_multiple_of(4) {
            body.push(0);
        }
        let mut out = vec![info_type, 0];
        out.extend_from_slice(&((INFO_HDR_LEN + body.len()) as u16).to_ne_bytes());
        out.extend(body);
        out
    }

    /// Builds one event: metadata + the given info records.
    pub(crate) fn event(mask: u64, pid: i32, infos: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = infos.concat();
        let mut out = Vec::new();
        out.extend_from_slice(&((META_LEN + body.len()) as u32).to_ne_bytes());
        out.push(METADATA_VERSION);
        out.push(0);
        out.extend_from_slice(&(META_LEN as u16).to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&libc::FAN_NOFD.to_ne_bytes());
        out.extend_from_slice(&pid.to_ne_bytes());
        out.extend(body);
        out
    }

    const FSID: [i32; 2] = [7, 9];

    fn create_event(name: &str) -> Vec<u8> {
        event(
            libc::FAN_CREATE,
            42,
            &[
                fid_record(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, FSID, &[1, 2, 3, 4, 5, 6, 7, 8], Some(name)),
                fid_record(libc::FAN_EVENT_INFO_TYPE_FID, FSID, &[9, 0, 0, 0, 1, 0, 0, 0], None),
            ],
        )
    }

    fn parse(buf: &[u8]) -> Vec<Parsed<'_>> {
        events(buf).collect()
    }

    #[test]
    fn a_create_event_yields_dir_name_and_child_handle() {
        let buf = create_event("hello.txt");
        let parsed = parse(&buf);
        assert_eq!(parsed.len(), 1);
        let Parsed::Event(ev) = parsed[0] else { panic!("{parsed:?}") };
        assert_eq!((ev.mask, ev.pid, ev.fd), (libc::FAN_CREATE, 42, libc::FAN_NOFD));
        let dir = ev.dir.expect("dir record");
        assert_eq!((dir.fsid, dir.handle, dir.name), (FSID, &[1, 2, 3, 4, 5, 6, 7, 8][..], Some(&b"hello.txt"[..])));
        let file = ev.file.expect("fid record");
        assert_eq!((file.handle.len(), file.name), (8, None));
    }

    #[test]
    fn a_rename_event_carries_old_and_new_names() {
        let buf = event(
            libc::FAN_RENAME,
            5,
            &[
                fid_record(libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, FSID, &[1; 8], Some("a")),
                fid_record(libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, FSID, &[2; 8], Some("b")),
                fid_record(libc::FAN_EVENT_INFO_TYPE_FID, FSID, &[3; 8], None),
            ],
        );
        let Parsed::Event(ev) = parse(&buf)[0] else { panic!() };
        assert_eq!(ev.old_dir.and_then(|f| f.name), Some(&b"a"[..]));
        assert_eq!(ev.new_dir.and_then(|f| f.name), Some(&b"b"[..]));
        assert!(ev.dir.is_none() && ev.file.is_some());
    }

    #[test]
    fn several_events_in_one_buffer_and_unknown_records_are_skipped() {
        let pidfd = vec![libc::FAN_EVENT_INFO_TYPE_PIDFD, 0, 8, 0, 3, 0, 0, 0];
        let mut buf = create_event("a");
        buf.extend(event(libc::FAN_Q_OVERFLOW, -1, &[pidfd]));
        buf.extend(create_event("b"));
        let parsed = parse(&buf);
        assert_eq!(parsed.len(), 3);
        assert!(matches!(parsed[1], Parsed::Event(RawEvent { mask: libc::FAN_Q_OVERFLOW, dir: None, .. })));
        assert!(matches!(parsed[2], Parsed::Event(RawEvent { dir: Some(Fid { name: Some(b"b"), .. }), .. })));
    }

    #[test]
    fn every_truncation_of_a_valid_buffer_is_malformed_never_a_panic() {
        let mut buf = create_event("some-name");
        buf.extend(create_event("other"));
        let first_len = create_event("some-name").len();
        for cut in 0..buf.len() {
            let parsed = parse(&buf[..cut]);
            let events = parsed.iter().filter(|p| matches!(p, Parsed::Event(_))).count();
            let bad = parsed.iter().filter(|p| matches!(p, Parsed::Malformed { .. })).count();
            let expect_events = usize::from(cut >= first_len);
            assert_eq!(events, expect_events, "cut at {cut}");
            assert_eq!(bad, usize::from(cut != 0 && cut != first_len), "cut at {cut}: {parsed:?}");
        }
    }

    #[test]
    fn lying_lengths_are_malformed() {
        let good = create_event("x");
        // event_len past the buffer.
        let mut long = good.clone();
        long[..4].copy_from_slice(&(good.len() as u32 + 8).to_ne_bytes());
        assert!(matches!(parse(&long)[..], [Parsed::Malformed { why: Malformed::EventPastEnd, .. }]));
        // event_len smaller than the metadata: the walk stops instead of looping.
        let mut tiny = good.clone();
        tiny[..4].copy_from_slice(&4u32.to_ne_bytes());
        assert!(matches!(parse(&tiny)[..], [Parsed::Malformed { why: Malformed::BadEventLen, .. }]));
        // metadata_len larger than event_len.
        let mut meta = good.clone();
        meta[6..8].copy_from_slice(&(good.len() as u16 + 1).to_ne_bytes());
        assert!(matches!(parse(&meta)[..], [Parsed::Malformed { why: Malformed::BadEventLen, .. }]));
        // An unknown version.
        let mut vers = good.clone();
        vers[4] = 2;
        assert!(matches!(parse(&vers)[..], [Parsed::Malformed { why: Malformed::Version(2), .. }]));
        // An info record whose len runs past the event.
        let mut info = good.clone();
        info[META_LEN + 2..META_LEN + 4].copy_from_slice(&200u16.to_ne_bytes());
        assert!(matches!(parse(&info)[..], [Parsed::Malformed { why: Malformed::BadInfoLen, .. }]));
        // An info record len of 0 would loop forever if it were trusted.
        let mut zero = good.clone();
        zero[META_LEN + 2..META_LEN + 4].copy_from_slice(&0u16.to_ne_bytes());
        assert!(matches!(parse(&zero)[..], [Parsed::Malformed { why: Malformed::BadInfoLen, .. }]));
        // handle_bytes past the record.
        let mut handle = good.clone();
        handle[META_LEN + 12..META_LEN + 16].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(matches!(parse(&handle)[..], [Parsed::Malformed { why: Malformed::BadHandle, .. }]));
        // handle_bytes = u32::MAX must not overflow.
        let mut huge = good.clone();
        huge[META_LEN + 12..META_LEN + 16].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(matches!(parse(&huge)[..], [Parsed::Malformed { why: Malformed::BadHandle, .. }]));
    }

    #[test]
    fn a_name_without_nul_and_duplicate_records_are_malformed() {
        let mut rec = fid_record(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, FSID, &[1; 8], Some("abc"));
        // Overwrite the NUL and padding of "abc\0" with letters.
        let n = rec.len();
        rec[n - 1] = b'z';
        let buf = event(libc::FAN_CREATE, 1, &[rec]);
        assert!(matches!(parse(&buf)[..], [Parsed::Malformed { why: Malformed::BadName, .. }]));
        let dup = fid_record(libc::FAN_EVENT_INFO_TYPE_FID, FSID, &[1; 8], None);
        let buf = event(libc::FAN_OPEN, 1, &[dup.clone(), dup]);
        assert!(matches!(parse(&buf)[..], [Parsed::Malformed { why: Malformed::DuplicateInfo, .. }]));
    }

    #[test]
    fn a_bad_event_does_not_hide_the_next_one() {
        let mut bad = create_event("x");
        bad[4] = 9; // version
        bad.extend(create_event("y"));
        let parsed = parse(&bad);
        assert!(matches!(parsed[0], Parsed::Malformed { why: Malformed::Version(9), .. }));
        assert!(matches!(parsed[1], Parsed::Event(RawEvent { dir: Some(Fid { name: Some(b"y"), .. }), .. })));
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic generator: xorshift.
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let template = create_event("garbage-test");
        for round in 0..20_000 {
            let mut buf = if round % 2 == 0 {
                template.clone()
            } else {
                (0..(next() % 200) as usize).map(|_| next() as u8).collect()
            };
            for _ in 0..(next() % 6) {
                if !buf.is_empty() {
                    let i = (next() as usize) % buf.len();
                    buf[i] = next() as u8;
                }
            }
            let n = events(&buf).count();
            assert!(n <= buf.len() / META_LEN + 1);
        }
    }
}
