//! Which window a key went to: the X input focus at key time, walked up to the top-level client window, and that
//! window's title, class and pid.
//!
//! `GetInputFocus` names the focus window (often a child widget of the application's window, or `PointerRoot`
//! when no window manager set a focus: then keys go to the top-level window under the pointer). From there the walk
//! goes up the window tree to the client window: the first window carrying `WM_STATE` (set by the window manager on
//! every managed client), else the first one with a title, else the top-level child of the root.
//!
//! The facts read from that window are set by the client itself and can say anything: `_NET_WM_NAME` (UTF-8) or
//! `WM_NAME` as title, the class half of `WM_CLASS`, and `_NET_WM_PID`. When the server has the X-Resource
//! extension (1.2+), the pid of the client that created the window is also asked from the server
//! (`XResQueryClientIds` with `LocalClientPID`, taken from the socket's credentials): that one the client cannot
//! choose, so it is preferred as `process.pid`.
//!
//! A window can vanish between two requests; an X error on one of them (BadWindow) makes that fact unknown, never
//! the backend fail. Only a broken connection is an error.

use x11rb::connection::RequestConnection;
use x11rb::errors::{ConnectionError, ReplyError};
use x11rb::protocol::res::{self, ClientIdMask, ClientIdSpec};
use x11rb::protocol::xproto::{Atom, AtomEnum, ConnectionExt as _, GetPropertyReply, InputFocus, Window};
use x11rb::rust_connection::RustConnection;

x11rb::atom_manager! {
    /// The atoms the focus resolver reads.
    Atoms: AtomsCookie {
        WM_STATE,
        _NET_WM_NAME,
        _NET_WM_PID,
        UTF8_STRING,
    }
}

/// Longest title read, in 32-bit units (4 KiB); longer titles are cut.
const MAX_TITLE_LONGS: u32 = 1024;

/// Most levels walked up from the focus window (real trees are a handful deep; this bounds a hostile one).
const MAX_DEPTH: usize = 32;

/// The facts about one client window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowFacts {
    /// The client window (its id identifies "the same window" for line grouping).
    pub window: Window,
    /// `_NET_WM_NAME`, else `WM_NAME`; empty when neither is set.
    pub title: String,
    /// The class part of `WM_CLASS`.
    pub class: Option<String>,
    /// `_NET_WM_PID` as the client set it.
    pub net_wm_pid: Option<u32>,
    /// The pid of the client that created the window, from the server (X-Resource), when available.
    pub server_pid: Option<u32>,
}

impl WindowFacts {
    /// The pid to attribute input to: the server's word first, the client's claim otherwise.
    pub fn pid(&self) -> Option<u32> {
        self.server_pid.or(self.net_wm_pid)
    }
}

/// Turns X errors (the window went away, a property of a wrong type) into "unknown"; keeps connection errors.
fn soft<T>(r: Result<T, ReplyError>) -> Result<Option<T>, ConnectionError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ReplyError::X11Error(e)) => {
            tracing::trace!(error = ?e.error_kind, "x11 request failed; fact unknown");
            Ok(None)
        }
        Err(ReplyError::ConnectionError(e)) => Err(e),
    }
}

/// Resolves the focused client window and reads its facts.
#[derive(Debug)]
pub struct FocusResolver {
    root: Window,
    atoms: Atoms,
    /// The server has X-Resource 1.2 (`QueryClientIds`).
    xres: bool,
    /// The last focus window seen and the client window it resolved to, so a key into the same focus costs one
    /// request (`GetInputFocus`).
    last: Option<(Window, Option<Window>)>,
}

impl FocusResolver {
    /// Interns the atoms and checks for X-Resource.
    pub fn new(conn: &RustConnection, root: Window) -> Result<FocusResolver, ReplyError> {
        let atoms = Atoms::new(conn)?.reply()?;
        let xres = match conn.extension_information(res::X11_EXTENSION_NAME)? {
            Some(_) => {
                let v = res::query_version(conn, 1, 2)?.reply()?;
                (v.server_major, v.server_minor) >= (1, 2)
            }
            None => false,
        };
        Ok(FocusResolver { root, atoms, xres, last: None })
    }

    /// True when pids come from the server (X-Resource) and not only from `_NET_WM_PID`.
    pub fn has_server_pids(&self) -> bool {
        self.xres
    }

    /// The client window that has the keyboard focus now; `None` when no window has it.
    pub fn focused_client(&mut self, conn: &RustConnection) -> Result<Option<Window>, ConnectionError> {
        let Some(focus) = soft(conn.get_input_focus()?.reply())? else { return Ok(None) };
        let mut window = focus.focus;
        if window == u32::from(InputFocus::POINTER_ROOT) {
            // No explicit focus: keys go to the window under the pointer (its top-level child of the root).
            let Some(pointer) = soft(conn.query_pointer(self.root)?.reply())? else { return Ok(None) };
            window = pointer.child;
        }
        if window == x11rb::NONE || window == self.root {
            return Ok(None);
        }
        if let Some((seen, client)) = self.last
            && seen == window
        {
            return Ok(client);
        }
        let client = self.client_of(conn, window)?;
        self.last = Some((window, client));
        Ok(client)
    }

    /// Walks up from `window` to the client window (see the module doc).
    fn client_of(&self, conn: &RustConnection, mut window: Window) -> Result<Option<Window>, ConnectionError> {
        let mut first_titled = None;
        for _ in 0..MAX_DEPTH {
            let wm_state = conn.get_property(false, window, self.atoms.WM_STATE, AtomEnum::ANY, 0, 0)?;
            let name = conn.get_property(false, window, AtomEnum::WM_NAME, AtomEnum::ANY, 0, 0)?;
            let net_name = conn.get_property(false, window, self.atoms._NET_WM_NAME, AtomEnum::ANY, 0, 0)?;
            let tree = conn.query_tree(window)?;
            let exists = |r: Option<GetPropertyReply>| r.is_some_and(|p| p.type_ != x11rb::NONE);
            if exists(soft(wm_state.reply())?) {
                return Ok(Some(window));
            }
            let titled = exists(soft(name.reply())?) | exists(soft(net_name.reply())?);
            if titled && first_titled.is_none() {
                first_titled = Some(window);
            }
            let Some(tree) = soft(tree.reply())? else { return Ok(first_titled) };
            if tree.parent == self.root || tree.parent == x11rb::NONE {
                return Ok(first_titled.or(Some(window)));
            }
            window = tree.parent;
        }
        Ok(first_titled)
    }

    /// Reads the title, class and pids of `window` (pipelined: one round trip's wait for all of them).
    pub fn describe(&self, conn: &RustConnection, window: Window) -> Result<WindowFacts, ConnectionError> {
        let text = |atom: Atom| conn.get_property(false, window, atom, AtomEnum::ANY, 0, MAX_TITLE_LONGS);
        let net_name = text(self.atoms._NET_WM_NAME)?;
        let name = text(AtomEnum::WM_NAME.into())?;
        let class = conn.get_property(false, window, AtomEnum::WM_CLASS, AtomEnum::ANY, 0, MAX_TITLE_LONGS)?;
        let pid = conn.get_property(false, window, self.atoms._NET_WM_PID, AtomEnum::CARDINAL, 0, 1)?;
        let spec = [ClientIdSpec { client: window, mask: ClientIdMask::LOCAL_CLIENT_PID }];
        let server = if self.xres { Some(res::query_client_ids(conn, &spec)?) } else { None };

        let as_text = |r: Option<GetPropertyReply>| {
            r.filter(|p| p.format == 8 && p.type_ != x11rb::NONE).map(|p| decode_title(&p.value, p.type_, &self.atoms))
        };
        let title = as_text(soft(net_name.reply())?).or(as_text(soft(name.reply())?)).unwrap_or_default();
        // Parsed here rather than with x11rb's `WmClass`, which reports a malformed property as a connection error:
        // a client must not be able to make the backend drop its connection.
        let class = soft(class.reply())?.filter(|p| p.format == 8).and_then(|p| wm_class(&p.value));
        let net_wm_pid = soft(pid.reply())?.and_then(|p| p.value32().and_then(|mut v| v.next())).filter(|&p| p > 0);
        let server_pid = match server {
            Some(cookie) => soft(cookie.reply())?
                .and_then(|r| r.ids.into_iter().find(|id| id.spec.mask == ClientIdMask::LOCAL_CLIENT_PID))
                .and_then(|id| id.value.first().copied())
                .filter(|&p| p > 0),
            None => None,
        };
        Ok(WindowFacts { window, title, class, net_wm_pid, server_pid })
    }
}

/// The class (second) string of a `WM_CLASS` value (`instance\0class\0`); `None` when absent or empty.
fn wm_class(value: &[u8]) -> Option<String> {
    let class = value.split(|&b| b == 0).nth(1).filter(|c| !c.is_empty())?;
    Some(String::from_utf8_lossy(class).into_owned())
}

/// A title property as text: `UTF8_STRING` as UTF-8, `STRING` (and anything else 8-bit) as Latin-1.
fn decode_title(bytes: &[u8], type_: Atom, atoms: &Atoms) -> String {
    if type_ == atoms.UTF8_STRING {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        bytes.iter().map(|&b| char::from(b)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wm_class_is_the_second_string() {
        assert_eq!(wm_class(b"xterm\0XTerm\0").as_deref(), Some("XTerm"));
        assert_eq!(wm_class(b"xterm\0XTerm").as_deref(), Some("XTerm"), "a missing final NUL is tolerated");
        assert_eq!(wm_class(b"xterm"), None);
        assert_eq!(wm_class(b"xterm\0\0"), None);
        assert_eq!(wm_class(b""), None);
    }
}
