//! The spool's record format: one event per record, length-prefixed and checksummed.
//!
//! ```text
//! record = len:u32le  crc:u32le  body[len]          crc = CRC-32 (IEEE) of body
//! body   = subject_len:u16le subject  id_len:u16le id  json
//! ```
//!
//! The subject and message id sit in front of the JSON so the publisher never parses an event again. The length
//! prefix says where the next record starts; the checksum catches a record that was only partly written when the
//! machine lost power (the file size can reach the disk before the data does), which a length alone cannot.

/// Bytes before the body: length and checksum.
pub const HEADER_LEN: usize = 8;

/// Largest body accepted when reading; a bigger length field means the header itself is garbage.
pub const MAX_BODY_LEN: usize = 16 << 20;

/// One decoded record, borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The NATS subject.
    pub subject: &'a str,
    /// The event id (`Nats-Msg-Id`).
    pub id: &'a str,
    /// The event as JSON.
    pub json: &'a [u8],
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, valid record of `len` bytes (header included).
    Record(RecordRef<'a>, usize),
    /// The buffer ends inside the record; `need` bytes (header included) are required to decide.
    Incomplete {
        /// Total bytes the record would take, when the header was readable.
        need: usize,
    },
    /// The bytes are not a valid record (bad length, checksum or layout).
    Corrupt(&'static str),
}

/// Appends one record to `out`. Fails only when the subject or id is longer than 65,535 bytes.
pub fn encode(out: &mut Vec<u8>, subject: &str, id: &str, json: &[u8]) -> Result<(), &'static str> {
    let subject_len = u16::try_from(subject.len()).map_err(|_| "subject longer than 65535 bytes")?;
    let id_len = u16::try_from(id.len()).map_err(|_| "event id longer than 65535 bytes")?;
    let body_len = 2 + subject.len() + 2 + id.len() + json.len();
    if body_len > MAX_BODY_LEN {
        return Err("event larger than 16 MiB");
    }
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&subject_len.to_le_bytes());
    out.extend_from_slice(subject.as_bytes());
    out.extend_from_slice(&id_len.to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(json);
    let crc = crc32(&out[start + HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Decodes the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    let Some((len_bytes, rest)) = buf.split_first_chunk::<4>() else {
        return Decoded::Incomplete { need: HEADER_LEN };
    };
    let body_len = u32::from_le_bytes(*len_bytes) as usize;
    if !(4..=MAX_BODY_LEN).contains(&body_len) {
        return Decoded::Corrupt("record length out of range");
    }
    let total = HEADER_LEN + body_len;
    let Some((crc_bytes, rest)) = rest.split_first_chunk::<4>() else {
        return Decoded::Incomplete { need: total };
    };
    let Some(body) = rest.get(..body_len) else {
        return Decoded::Incomplete { need: total };
    };
    if crc32(body) != u32::from_le_bytes(*crc_bytes) {
        return Decoded::Corrupt("record checksum mismatch");
    }
    match split_body(body) {
        Some((subject, id, json)) => Decoded::Record(RecordRef { subject, id, json }, total),
        None => Decoded::Corrupt("record body layout"),
    }
}

fn split_body(body: &[u8]) -> Option<(&str, &str, &[u8])> {
    let (subject, rest) = take_str(body)?;
    let (id, json) = take_str(rest)?;
    Some((subject, id, json))
}

fn take_str(buf: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = buf.split_first_chunk::<2>()?;
    let len = u16::from_le_bytes(*len) as usize;
    let s = std::str::from_utf8(rest.get(..len)?).ok()?;
    Some((s, &rest[len..]))
}

/// CRC-32 (IEEE 802.3, as zlib computes it); SIMD-accelerated, so checksumming costs little next to the JSON.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn round_trip_and_every_truncation_is_incomplete() {
        let mut buf = Vec::new();
        encode(&mut buf, "ringwatch.h.process", "abc-1", br#"{"x":1}"#).expect("encodes");
        let Decoded::Record(rec, len) = decode(&buf) else { panic!("decodes") };
        assert_eq!(len, buf.len());
        assert_eq!((rec.subject, rec.id, rec.json), ("ringwatch.h.process", "abc-1", &br#"{"x":1}"#[..]));
        for cut in 0..buf.len() {
            assert!(matches!(decode(&buf[..cut]), Decoded::Incomplete { .. }), "cut at {cut}");
        }
    }

    #[test]
    fn flipped_bits_and_zeroes_are_corrupt() {
        let mut buf = Vec::new();
        encode(&mut buf, "s", "i", b"{}").expect("encodes");
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(decode(&bad), Decoded::Corrupt("record checksum mismatch"));
        assert_eq!(decode(&[0u8; 64]), Decoded::Corrupt("record length out of range"));
    }
}
