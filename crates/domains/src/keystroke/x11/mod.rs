//! The keystroke domain's user-mode backend on **X11**: the keys typed on one X display, grouped into lines and
//! attributed to the window that had the keyboard focus.
//!
//! # What it does
//!
//! It connects to one display as an ordinary X client (x11rb, pure Rust) and selects **XInput2 raw key events**
//! (`XI_RawKeyPress`/`XI_RawKeyRelease`) on the root window for all master devices. Raw events are the device's
//! own key presses before any focus or grab decides who gets them, delivered to every client that asks (XI 2.1+
//! delivers them even while another client grabs the keyboard), so the backend sees every key on the display
//! without stealing or delaying any. Each press is turned into a key through the keyboard mapping and the modifier
//! state the backend follows itself (`keymap`; raw events carry only a keycode), asked which client window has
//! the focus at that moment (`focus`), and fed to the shared line assembler
//! ([`assemble`](crate::keystroke::assemble)): Enter ends a line, BackSpace edits it, control keys are rendered
//! printable, partial input is flushed after the policy's idle time, and a change of focused window flushes the
//! pending line, so one event never mixes two windows. Each line becomes a `keystroke`/`input` event with
//! `keystroke.window` = {title, class, `_NET_WM_PID`} and `process.pid` = the window's pid (the pipeline adds guid,
//! user and exe from it).
//!
//! **Why XInput2 and not RECORD.** XInput2 raw events work under Xvfb with XTEST input (xdotool): XTEST presses
//! go through the "Virtual core XTEST keyboard" slave device and its master like a keyboard's, so they produce raw
//! events (this backend's tests type every key that way and lose none). RECORD was therefore not needed: XInput2 is
//! the supported interface (RECORD is disabled on some servers), needs one ordinary connection (RECORD needs two,
//! one of them stuck in a data stream), and delivers a parsed event per key instead of a byte stream to re-parse.
//! Selecting master devices only (`XIAllMasterDevices`) gives each key once; selecting slaves too would repeat
//! every key (once from the slave, once from its master). A floating slave (detached from every master) delivers
//! to no focused window, so nothing typed on it reaches an application; it is not watched.
//!
//! The keyboard mapping is read with `GetKeyboardMapping` at start and again on `MappingNotify`,
//! `XkbNewKeyboardNotify` and `XkbMapNotify` (XKB is used only for these notices and for the Caps/Num Lock state
//! at start).
//!
//! # Policy
//!
//! The backend refuses to start unless the policy's `keystrokes.enabled` is true. `keystrokes.users`/`groups`
//! compare the real uid / gid of the process owning the focused window (its pid, see below); input to a window
//! whose owner is unknown is not captured when such a filter is set. `ttys` does not apply to X11. DLP patterns
//! are applied later, by the pipeline, to the text this backend emits.
//!
//! # Trust: every event is `trusted: false`
//!
//! Nothing here comes from the kernel. The X server is a user-space program, usually run by (or for) the very user
//! being monitored, who could run one that reports anything. Any client of the display may inject keys with XTEST
//! (that is how xdotool types, and how the tests drive this backend), and they are indistinguishable here from
//! keys typed on a keyboard. The window title, class and `_NET_WM_PID` are properties the application sets on its
//! own window and can forge. The pid is taken from the server when it has the X-Resource extension (the creating
//! client's socket credentials, which the client cannot choose), else from `_NET_WM_PID`; both rest on the
//! server's word. So the facts are what the X server said, not verified, exactly the case DESIGN.md §4 marks
//! `trusted: false`.
//!
//! # What it cannot see
//!
//! - Other displays: it sees only the display it connected to (a second Xvfb, another user's session, a nested
//!   server such as Xephyr are separate). Wayland sessions (X clients under XWayland see only XWayland's own
//!   windows' input), text consoles, and terminals reached over ssh are not X input at all; the kernel backend
//!   covers terminals.
//! - Keys sent with `XSendEvent` (synthetic events delivered to one window without passing through a device; most
//!   applications ignore them, xterm by default too), and text inserted by input methods, paste, or drag and drop:
//!   only key presses are seen, and a compose sequence or IME shows as the keys pressed.
//! - Which application really received a key: the focus is read when the event is processed (normally within a
//!   millisecond); keys still queued across a focus change can be attributed to the newly focused window.
//! - Password fields: X has no "echo off", so input typed into a GUI password dialog is captured like any text.
//!   Restrict capture with `keystrokes.users`, and rely on the DLP stage for masking.
//! - Keyboard groups (layout switching), dead keys and AltGr layouts beyond level 3/4 are not modelled; the text
//!   then shows the group-1 symbols.
//!
//! # Losses and a lost display
//!
//! The X server queues events for its clients; if this backend falls behind, the server buffers them. A full
//! pipeline queue is counted by the pipeline as usual. When the connection fails, the pending line is flushed, a
//! `sensor`/`error` event says so, and the backend reconnects at once and then every 2 s (a `sensor`/`start`
//! event when it is back); the agent's other domains are not stopped. When the display itself went away (server
//! restart, logout) nothing can be typed on it meanwhile; if the server dropped this client while the display
//! stayed up (a client that stopped reading for very long), keys typed before the reconnect are lost, between the
//! two sensor events.
//!
//! # Layout
//!
//! - `keymap`: keycode -> keysym -> key, and the modifier/lock state.
//! - `focus`: the focused client window and its title, class and pids.
//! - this file: connection and set-up (probe, start, reconnect), the event loop, policy filter, event building.

mod focus;
mod keymap;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use ringwatch_core::compiled::KeystrokePlan;
use ringwatch_core::event::{Backend, Domain, Mode, SourceKind, WindowInfo};
use ringwatch_core::proc_table::read_proc_process;
use ringwatch_core::{Activity, Event, EventSender, Probe, Source, SourceContext, SourceError, Timestamp};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::errors::{ConnectError, ConnectionError, ReplyError};
use x11rb::protocol::Event as XEvent;
use x11rb::protocol::xinput::{self, ConnectionExt as _, EventMask, XIEventMask};
use x11rb::protocol::xkb::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{ConnectionExt as _, Mapping, ModMask, Window};
use x11rb::rust_connection::RustConnection;

use crate::keystroke::assemble::{Line, LineAssembler};
use focus::{FocusResolver, WindowFacts};
use keymap::{KeyboardState, Keymap, Stroke};

/// Backend name used in logs, sensor events and loss counters.
const NAME: &str = "keystroke/x11";

/// `backend` of every event this source emits.
const BACKEND: Backend = Backend { mode: Mode::User, source: SourceKind::X11 };

/// `XIAllMasterDevices`: raw events of every master device (each key once; see the module doc).
const XI_ALL_MASTER_DEVICES: u16 = 1;

/// Longest wait for X events before the shutdown flag and the idle timer are checked again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How often a lost display is tried again.
const RECONNECT_EVERY: Duration = Duration::from_secs(2);

/// Where the backend connects and what the policy allows.
#[derive(Debug, Clone)]
pub struct X11Config {
    /// The X display (`:0`, `unix:1`, `host:0.0`); `None` takes `$DISPLAY`.
    pub display: Option<String>,
    /// The policy's keystroke section; nothing is captured unless `enabled`.
    pub plan: KeystrokePlan,
}

/// Why the display cannot be used.
fn unsupported(what: impl Into<String>) -> SourceError {
    SourceError::Unsupported { backend: NAME, what: what.into() }
}

fn failed(step: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::Failed { backend: NAME, step: step.to_owned(), message: e.to_string() }
}

/// The display to use: the configured one, else `$DISPLAY`.
fn display_name(configured: Option<&str>) -> Result<String, SourceError> {
    match configured.map(str::to_owned).or_else(|| std::env::var("DISPLAY").ok()) {
        Some(d) if !d.trim().is_empty() => Ok(d),
        _ => Err(unsupported("no X display: DISPLAY is unset and no display was configured (run --x11-display)")),
    }
}

/// An open display with the extensions this backend needs.
struct Display {
    conn: RustConnection,
    root: Window,
    name: String,
    /// `major.minor` of XInput the server agreed to.
    xi_version: (u16, u16),
    /// The server has XKB (for mapping notices and the lock state).
    xkb: bool,
}

impl Display {
    /// Connects and checks for XInput 2.
    fn open(configured: Option<&str>) -> Result<Display, SourceError> {
        let name = display_name(configured)?;
        let (conn, screen) = x11rb::connect(Some(&name)).map_err(|e| match e {
            ConnectError::IoError(_) | ConnectError::DisplayParsingError(_) | ConnectError::InvalidScreen => {
                unsupported(format!("cannot connect to X display {name:?}: {e}"))
            }
            other => unsupported(format!("X display {name:?} refused the connection: {other} (is XAUTHORITY set?)")),
        })?;
        let root = conn.setup().roots.get(screen).map(|s| s.root).ok_or_else(|| unsupported("no screen"))?;
        let xi_version =
            match conn.extension_information(xinput::X11_EXTENSION_NAME).map_err(|e| failed("query XInput", e))? {
                None => return Err(unsupported(format!("X display {name:?} has no XInputExtension"))),
                Some(_) => {
                    let v = conn.xinput_xi_query_version(2, 2).map_err(|e| failed("XIQueryVersion", e))?;
                    let v = v.reply().map_err(|e| failed("XIQueryVersion", e))?;
                    (v.major_version, v.minor_version)
                }
            };
        if xi_version.0 < 2 {
            return Err(unsupported(format!(
                "X display {name:?} has XInput {}.{}; raw key events need XInput 2",
                xi_version.0, xi_version.1
            )));
        }
        let xkb = match conn.extension_information(xkb::X11_EXTENSION_NAME).map_err(|e| failed("query XKB", e))? {
            None => false,
            Some(_) => {
                conn.xkb_use_extension(1, 0)
                    .map_err(|e| failed("XkbUseExtension", e))?
                    .reply()
                    .map_err(|e| failed("XkbUseExtension", e))?
                    .supported
            }
        };
        Ok(Display { conn, root, name, xi_version, xkb })
    }

    fn describe(&self) -> String {
        let vendor = String::from_utf8_lossy(&self.conn.setup().vendor).into_owned();
        format!(
            "X display {} ({vendor}), XInput {}.{} raw key events{}",
            self.name,
            self.xi_version.0,
            self.xi_version.1,
            if self.xkb { ", XKB" } else { "" }
        )
    }
}

/// A display being watched: raw key events selected, keyboard mapping and focus resolver ready.
struct Attached {
    display: Display,
    keyboard: KeyboardState,
    focus: FocusResolver,
}

impl Attached {
    /// Connects, selects raw key events and the keyboard notices, reads the mapping and the lock state.
    fn new(configured: Option<&str>) -> Result<Attached, SourceError> {
        let display = Display::open(configured)?;
        let conn = &display.conn;
        let raw_keys = EventMask {
            deviceid: XI_ALL_MASTER_DEVICES,
            mask: vec![XIEventMask::RAW_KEY_PRESS | XIEventMask::RAW_KEY_RELEASE],
        };
        let check = |step: &str, r: Result<x11rb::cookie::VoidCookie<'_, RustConnection>, ConnectionError>| {
            r.map_err(|e| failed(step, e))?.check().map_err(|e| failed(step, e))
        };
        check("XISelectEvents raw keys on the root window", conn.xinput_xi_select_events(display.root, &[raw_keys]))?;
        if display.xkb {
            let notices = xkb::EventType::NEW_KEYBOARD_NOTIFY | xkb::EventType::MAP_NOTIFY;
            let parts = xkb::MapPart::KEY_TYPES | xkb::MapPart::KEY_SYMS | xkb::MapPart::MODIFIER_MAP;
            let none = xkb::SelectEventsAux::new();
            let spec = xkb::ID::USE_CORE_KBD.into();
            check("XkbSelectEvents", conn.xkb_select_events(spec, 0u16.into(), notices, parts, parts, &none))?;
        }
        let keymap = read_keymap(conn).map_err(|e| failed("GetKeyboardMapping", e))?;
        let (caps_lock, num_lock) = lock_state(&display, &keymap).map_err(|e| failed("read lock state", e))?;
        let keyboard = KeyboardState::new(keymap, caps_lock, num_lock);
        let focus = FocusResolver::new(conn, display.root).map_err(|e| failed("intern atoms", e))?;
        let what = display.describe();
        tracing::info!(backend = NAME, server_pids = focus.has_server_pids(), "keystroke capture on {what}");
        Ok(Attached { display, keyboard, focus })
    }
}

/// The X11 keystroke backend (see the module doc).
pub struct KeystrokeX11 {
    /// The display as configured (`None`: `$DISPLAY`), for reconnecting.
    configured: Option<String>,
    plan: KeystrokePlan,
    x: Attached,
}

impl KeystrokeX11 {
    /// Whether `$DISPLAY` can be monitored: it must be set, accept a connection, and have XInput 2.
    pub fn probe() -> Probe {
        Self::probe_display(None)
    }

    /// Whether `display` (or `$DISPLAY` when `None`) can be monitored.
    pub fn probe_display(display: Option<&str>) -> Probe {
        match Display::open(display) {
            Ok(d) => Probe::ok(Domain::Keystroke, Mode::User, SourceKind::X11, d.describe()),
            Err(e) => Probe::unavailable(Domain::Keystroke, Mode::User, SourceKind::X11, e.to_string()),
        }
    }

    /// Connects, selects raw key events and reads the keyboard mapping. Refuses when the policy does not enable
    /// keystroke capture.
    pub fn start(cfg: &X11Config) -> Result<KeystrokeX11, SourceError> {
        if !cfg.plan.enabled {
            return Err(unsupported("keystroke capture is off: the policy does not enable `keystrokes`"));
        }
        let x = Attached::new(cfg.display.as_deref())?;
        Ok(KeystrokeX11 { configured: cfg.display.clone(), plan: cfg.plan.clone(), x })
    }
}

/// The core keyboard mapping for every keycode of the server.
fn read_keymap(conn: &RustConnection) -> Result<Keymap, ReplyError> {
    let (min, max) = (conn.setup().min_keycode, conn.setup().max_keycode);
    let count = max.saturating_sub(min).saturating_add(1);
    let reply = conn.get_keyboard_mapping(min, count)?.reply()?;
    Ok(Keymap::new(min, reply.keysyms_per_keycode, reply.keysyms))
}

/// (Caps Lock on, Num Lock on) as the server has them now; both off without XKB.
fn lock_state(display: &Display, keymap: &Keymap) -> Result<(bool, bool), ReplyError> {
    if !display.xkb {
        return Ok((false, false));
    }
    let conn = &display.conn;
    let state = conn.xkb_get_state(xkb::ID::USE_CORE_KBD.into())?;
    let modmap = conn.get_modifier_mapping()?;
    let locked = u16::from(state.reply()?.locked_mods);
    let modmap = modmap.reply()?;
    // Num Lock is whichever of the eight modifiers has a Num_Lock key in it (usually Mod2).
    let per = (modmap.keycodes.len() / 8).max(1);
    let num_mask = modmap
        .keycodes
        .chunks(per)
        .position(|codes| codes.iter().any(|&k| keymap.is_num_lock(k)))
        .map_or(0, |i| 1u16 << i);
    Ok((locked & u16::from(ModMask::LOCK) != 0, num_mask != 0 && locked & num_mask != 0))
}

/// The line being typed: into which window, and whether the policy lets it be captured.
struct Current {
    /// The client window keys go to; `None` before the first key.
    window: Option<WindowFacts>,
    /// False when the policy's user/group filter excludes the window's owner: keys are not assembled at all.
    captured: bool,
    line: LineAssembler,
}

impl Source for KeystrokeX11 {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(mut self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        loop {
            let mut current = Current { window: None, captured: false, line: LineAssembler::new() };
            let lost = self.watch(&ctx, &mut current);
            emit(&ctx.events, current.window.as_ref(), current.line.flush());
            let Err(e) = lost else { return Ok(()) };
            // The display went away (server restart, logout) or dropped us: report it, then reconnect, now and every
            // RECONNECT_EVERY until it is back. The agent's other domains go on.
            let name = self.x.display.name.clone();
            tracing::warn!(backend = NAME, display = %name, error = %e, "lost the X display; reconnecting");
            let message = format!("lost X display {name} ({e}); reconnecting every {}s", RECONNECT_EVERY.as_secs());
            ctx.events.send(Event::sensor(Activity::Error, NAME, message, None));
            loop {
                if let Ok(x) = Attached::new(self.configured.as_deref()) {
                    self.x = x;
                    let message = format!("reconnected to X display {name}");
                    ctx.events.send(Event::sensor(Activity::Start, NAME, message, None));
                    break;
                }
                if ctx.shutdown.sleep(RECONNECT_EVERY) {
                    return Ok(());
                }
            }
        }
    }
}

impl KeystrokeX11 {
    /// Streams the display's keys until shutdown (`Ok`) or until the connection fails (`Err`).
    fn watch(&mut self, ctx: &SourceContext, current: &mut Current) -> Result<(), SourceError> {
        let mut lines = Vec::new();
        let idle = self.plan.idle_flush;
        let mut last_key = Instant::now();
        while !ctx.shutdown.is_triggered() {
            loop {
                let ev = self.x.display.conn.poll_for_event().map_err(|e| failed("read X events", e))?;
                let Some(ev) = ev else { break };
                if self.handle(ev, current, &mut lines, &ctx.events)? {
                    last_key = Instant::now();
                }
            }
            if !current.line.is_empty() && last_key.elapsed() >= idle {
                let line = current.line.flush_idle(Timestamp::now(), Duration::ZERO);
                emit(&ctx.events, current.window.as_ref(), line);
            }
            let wait = if current.line.is_empty() {
                POLL_INTERVAL
            } else {
                idle.saturating_sub(last_key.elapsed()).clamp(Duration::from_millis(1), POLL_INTERVAL)
            };
            let fd = PollFd::new(self.x.display.conn.stream().as_fd(), PollFlags::POLLIN);
            let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
            match poll(&mut [fd], timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(failed("poll the X connection", e)),
            }
        }
        Ok(())
    }

    /// Handles one X event; true when it was a key press that typed something.
    fn handle(
        &mut self,
        ev: XEvent,
        current: &mut Current,
        lines: &mut Vec<Line>,
        events: &EventSender,
    ) -> Result<bool, SourceError> {
        match ev {
            XEvent::XinputRawKeyPress(e) => {
                let Ok(keycode) = u8::try_from(e.detail) else {
                    events.count_malformed();
                    return Ok(false);
                };
                let Stroke::Keys(keys) = self.x.keyboard.press(keycode) else { return Ok(false) };
                let at = Timestamp::now();
                self.follow_focus(current, events).map_err(|e| failed("read the input focus", e))?;
                if current.captured {
                    for key in keys {
                        current.line.push_key(key, at, lines);
                    }
                    for line in lines.drain(..) {
                        emit(events, current.window.as_ref(), Some(line));
                    }
                }
                Ok(true)
            }
            XEvent::XinputRawKeyRelease(e) => {
                if let Ok(keycode) = u8::try_from(e.detail) {
                    self.x.keyboard.release(keycode);
                }
                Ok(false)
            }
            XEvent::MappingNotify(e) if e.request == Mapping::KEYBOARD => self.reload_keymap(),
            XEvent::XkbNewKeyboardNotify(_) | XEvent::XkbMapNotify(_) => self.reload_keymap(),
            XEvent::Error(e) => {
                tracing::debug!(backend = NAME, error = ?e.error_kind, "X error");
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    fn reload_keymap(&mut self) -> Result<bool, SourceError> {
        let keymap = read_keymap(&self.x.display.conn).map_err(|e| failed("GetKeyboardMapping", e))?;
        self.x.keyboard.set_keymap(keymap);
        tracing::debug!(backend = NAME, "keyboard mapping reloaded");
        Ok(false)
    }

    /// Before a key is assembled: if the focus moved to another client window, flush the pending line (it belongs
    /// to the old window) and describe the new one; a new line re-reads the window's facts (titles change).
    fn follow_focus(&mut self, current: &mut Current, events: &EventSender) -> Result<(), ConnectionError> {
        let conn = &self.x.display.conn;
        let client = self.x.focus.focused_client(conn)?;
        let same_window = current.window.as_ref().map(|w| w.window) == client && current.window.is_some();
        // Same window: keep its facts while a line is under way (and keep its policy verdict, which depends only
        // on the window's process).
        if same_window && (!current.line.is_empty() || !current.captured) {
            return Ok(());
        }
        if !same_window {
            emit(events, current.window.as_ref(), current.line.flush());
        }
        match client {
            None => {
                // Keys typed while no window has the focus reach no application.
                current.window = None;
                current.captured = false;
            }
            Some(w) => {
                let facts = self.x.focus.describe(conn, w)?;
                current.captured = self.policy_allows(&facts);
                current.window = Some(facts);
            }
        }
        Ok(())
    }

    /// The policy's user and group filters against the owner of the window's process.
    fn policy_allows(&self, facts: &WindowFacts) -> bool {
        if self.plan.uids.is_empty() && self.plan.gids.is_empty() {
            return true;
        }
        let Some(owner) = facts.pid().and_then(read_proc_process) else { return false };
        (self.plan.uids.is_empty() || self.plan.uids.contains(&owner.uid))
            && (self.plan.gids.is_empty() || self.plan.gids.contains(&owner.gid))
    }
}

/// Sends one assembled line as an event.
fn emit(events: &EventSender, window: Option<&WindowFacts>, line: Option<Line>) {
    let Some(line) = line else { return };
    let mut ev = Event::new(Domain::Keystroke, Activity::Input, BACKEND);
    ev.time = line.started;
    ev.trusted = false;
    let mut info = line.to_keystroke_info();
    if let Some(w) = window {
        ev.process.pid = w.pid().unwrap_or(0);
        info.window = Some(WindowInfo { title: w.title.clone(), class: w.class.clone(), pid: w.net_wm_pid });
    }
    ev.keystroke = Some(info);
    events.send(ev);
}
