//! What the proxy learns from a client's first bytes: the `Host` header of a plain HTTP/1.x request
//! (`httparse`), or the server name (SNI) of a TLS ClientHello (`tls-parser`). Both only look; the bytes are
//! relayed unchanged.

use tls_parser::{TlsExtension, TlsMessage, TlsMessageHandshake};

/// The outcome of looking at the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// An HTTP request whose headers are complete; the Host header without port, if it had one.
    Http(Option<String>),
    /// A TLS ClientHello; its SNI, if it had one.
    Tls(Option<String>),
    /// The start of an HTTP request or TLS record: more bytes would tell.
    NeedMore,
    /// Neither HTTP nor TLS (or malformed): relay without a name.
    Other,
}

/// Looks at the first bytes of a connection.
pub fn sniff(buf: &[u8]) -> Sniffed {
    match buf.first() {
        None => Sniffed::NeedMore,
        Some(0x16) => sniff_tls(buf),
        Some(b) if b.is_ascii_uppercase() => sniff_http(buf),
        Some(_) => Sniffed::Other,
    }
}

fn sniff_http(buf: &[u8]) -> Sniffed {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            let host = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(host_without_port);
            Sniffed::Http(host)
        }
        Ok(httparse::Status::Partial) => Sniffed::NeedMore,
        // Too many headers still had a Host line somewhere: not worth more code; relay without a name.
        Err(_) => Sniffed::Other,
    }
}

/// `example.com:8080` -> `example.com`, `[::1]:80` -> `::1`, trimmed and lowercased.
fn host_without_port(value: &str) -> String {
    let v = value.trim();
    let host = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match v.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => v,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn sniff_tls(buf: &[u8]) -> Sniffed {
    // Record header: type, version (2), length (2).
    if buf.len() < 5 {
        return Sniffed::NeedMore;
    }
    let record_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if buf.len() < 5 + record_len {
        return Sniffed::NeedMore;
    }
    let Ok((_, record)) = tls_parser::parse_tls_plaintext(&buf[..5 + record_len]) else { return Sniffed::Other };
    for msg in &record.msg {
        if let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) = msg {
            let sni = hello.ext.and_then(|ext| tls_parser::parse_tls_extensions(ext).ok()).and_then(|(_, exts)| {
                exts.into_iter().find_map(|e| match e {
                    TlsExtension::SNI(names) => names
                        .iter()
                        .find(|(kind, _)| kind.0 == 0)
                        .and_then(|(_, name)| std::str::from_utf8(name).ok())
                        .map(|n| n.trim_end_matches('.').to_ascii_lowercase()),
                    _ => None,
                })
            });
            return Sniffed::Tls(sni);
        }
    }
    Sniffed::Other
}

/// A ClientHello naming `name` as `openssl s_client -servername` sends it, trimmed to what [`sniff`] reads: TLS 1.2
/// record, handshake header, version, random, empty session id, one cipher, null compression, and a server_name
/// extension. What the proxy's tests send as a TLS client's first bytes.
pub fn client_hello(name: &str) -> Vec<u8> {
    let mut sni = vec![0u8, 0]; // list length, patched below
    sni.push(0); // host_name
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name.as_bytes());
    let list_len = (sni.len() - 2) as u16;
    sni[..2].copy_from_slice(&list_len.to_be_bytes());
    let mut ext = vec![0u8, 0]; // extension type server_name
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni);
    let mut body = vec![3u8, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // ciphers
    body.extend_from_slice(&[1, 0]); // compression
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1u8];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16u8, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_host_is_found_without_port_and_lowercased() {
        let req = b"GET / HTTP/1.1\r\nUser-Agent: x\r\nHost: Example.COM:8080\r\n\r\n";
        assert_eq!(sniff(req), Sniffed::Http(Some("example.com".into())));
        assert_eq!(sniff(b"GET / HTTP/1.0\r\n\r\n"), Sniffed::Http(None));
        assert_eq!(sniff(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"), Sniffed::Http(Some("::1".into())));
        assert_eq!(sniff(b"GET / HTTP/1.1\r\nHost: exa"), Sniffed::NeedMore);
    }

    #[test]
    fn tls_sni_is_found_and_partial_records_wait() {
        let hello = client_hello("Example.COM.");
        assert_eq!(sniff(&hello), Sniffed::Tls(Some("example.com".into())));
        assert_eq!(sniff(&hello[..hello.len() - 1]), Sniffed::NeedMore);
        assert_eq!(sniff(&hello[..3]), Sniffed::NeedMore);
    }

    #[test]
    fn other_protocols_are_not_guessed() {
        assert_eq!(sniff(b"SSH-2.0-OpenSSH_9.2\r\n"), Sniffed::Other);
        assert_eq!(sniff(&[0u8, 1, 2]), Sniffed::Other);
        assert_eq!(sniff(&[0x16, 3, 1, 0, 4, 0xff, 0, 0, 0]), Sniffed::Other);
        assert_eq!(sniff(b""), Sniffed::NeedMore);
    }
}
