//! Keystroke domain, user mode without eBPF: a pty session recorder (`ringwatch session -- CMD`, like tlog or
//! script(1)). It runs CMD on a pseudo-terminal it owns, relays the user's terminal to it in raw mode, and records
//! what the user types through the shared line assembler ([`crate::keystroke::assemble`]).
//!
//! Redaction is decided like the kernel backend decides it, from the pty's termios at the moment the input arrives:
//! ICANON set and ECHO clear (a password prompt) -> only the count of keys is kept, up to the Enter that ends the
//! secret. Output of CMD is relayed, never recorded.
//!
//! [`PtyChild`] (a command on a fresh pty, with the pty as its controlling terminal) is also what the tests and
//! `ringwatch bench keystroke` use to drive shells.
//!
//! # What it cannot see
//!
//! - Anything outside the recorded session: it is opt-in per session (or per login, as a login shell wrapper).
//! - Keys typed ahead of a prompt that turns ECHO off are recorded in clear when they arrive before the program
//!   changed the terminal mode (the kernel backend decides per read, so it redacts them).
//! - The process that reads a line is the pty's foreground process group leader (tcgetpgrp), not the exact
//!   reader. Events are `trusted`: the recorder is not inside the recorded process.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, open};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::pty::{Winsize, grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode as FileMode;
use nix::sys::termios::{LocalFlags, SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};
use ringwatch_core::event::Timestamp;
use ringwatch_core::{Activity, Backend, Domain, Event, EventSender, Mode, SourceKind};

use crate::keystroke::assemble::{Line, LineAssembler};

/// Backend name in logs and loss counters.
pub const NAME: &str = "keystroke/pty";

/// How long the relay waits in poll: how often idle input is flushed and window-size changes are copied.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A command running on a pty this process owns: its controlling terminal is the pty's slave side; the master
/// side is here (what is written to it is the command's input, what is read is its output).
#[derive(Debug)]
pub struct PtyChild {
    /// The master side (close-on-exec; the child never holds it).
    pub master: File,
    /// The command.
    pub child: Child,
    /// The slave's name as events show it, e.g. `pts/4`.
    pub tty: String,
}

impl PtyChild {
    /// Opens a pty (master and slave close-on-exec, so no other child can inherit them), sets its window size,
    /// and spawns `cmd` with the slave as stdin/stdout/stderr, in a new session with the slave as its controlling
    /// terminal.
    pub fn spawn(cmd: &mut Command, winsize: Option<Winsize>) -> io::Result<PtyChild> {
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let slave_path = ptsname_r(&master)?;
        let slave: OwnedFd =
            open(slave_path.as_str(), OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, FileMode::empty())?;
        let master = File::from(OwnedFd::from(master));
        if let Some(ws) = winsize {
            set_winsize(master.as_fd(), &ws)?;
        }
        cmd.stdin(Stdio::from(slave.try_clone()?)).stdout(Stdio::from(slave.try_clone()?)).stderr(Stdio::from(slave));
        // SAFETY: the closure runs in the forked child before exec and only calls setsid(2) and ioctl(2), both
        // async-signal-safe; it touches no memory of the parent beyond its own stack.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                // stdin is the slave by now; make it the controlling terminal of the new session.
                if libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        // The Command keeps its Stdio (our copies of the slave) until it is dropped or reset; with a slave open
        // here the master would never see EIO when the session ends.
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let child = spawned?;
        let tty = slave_path.strip_prefix("/dev/").unwrap_or(&slave_path).to_owned();
        Ok(PtyChild { master, child, tty })
    }
}

/// The window size of the terminal on `fd`.
pub fn get_winsize(fd: BorrowedFd<'_>) -> io::Result<Winsize> {
    let mut ws = Winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one struct winsize into `ws`, which is valid, writable and of that type.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(ws)
}

/// Sets the window size of the terminal on `fd` (the pty master: the slave's programs get SIGWINCH).
pub fn set_winsize(fd: BorrowedFd<'_>, ws: &Winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one struct winsize from `ws`, which is valid and of that type.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, ws) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True when input read under these terminal flags is a secret: canonical mode with ECHO off (what the kernel's
/// tty audit and the eBPF backend use; readline runs with both off and is not a secret).
pub fn is_secret_mode(lflag: LocalFlags) -> bool {
    lflag.contains(LocalFlags::ICANON) && !lflag.contains(LocalFlags::ECHO)
}

/// How the recorder redacts and flushes.
#[derive(Debug, Clone)]
pub struct RecorderOptions {
    /// Keep only the length of input typed while the pty is in canonical mode with ECHO off.
    pub redact_echo_off: bool,
    /// Partial input is flushed as an event after this long without a key.
    pub idle_flush: Duration,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        RecorderOptions { redact_echo_off: true, idle_flush: Duration::from_secs(2) }
    }
}

/// The recording side of a session: input bytes (and the pty's mode when they arrived) -> line events.
#[derive(Debug)]
pub struct InputRecorder {
    opts: RecorderOptions,
    tty: String,
    /// The session's command: events name the foreground process group leader, or this pid.
    session_pid: u32,
    asm: LineAssembler,
    lines: Vec<Line>,
}

impl InputRecorder {
    /// A recorder for the session of `session_pid` on `tty`.
    pub fn new(opts: RecorderOptions, tty: String, session_pid: u32) -> Self {
        InputRecorder { opts, tty, session_pid, asm: LineAssembler::new(), lines: Vec::new() }
    }

    /// Records `bytes` the user typed, with the pty's local flags at that moment; `reader` is the pid that will
    /// read them (the foreground process group), when known. Returns the completed lines' events.
    pub fn input(&mut self, bytes: &[u8], lflag: LocalFlags, reader: Option<u32>, at: Timestamp) -> Vec<Event> {
        if self.opts.redact_echo_off && is_secret_mode(lflag) {
            // Only counts leave this function; each Enter ends one secret line.
            let mut rest = bytes;
            while let Some(pos) = rest.iter().position(|b| *b == b'\r' || *b == b'\n') {
                self.asm.push_redacted(count(pos + 1), true, at, &mut self.lines);
                rest = &rest[pos + 1..];
            }
            if !rest.is_empty() {
                self.asm.push_redacted(count(rest.len()), false, at, &mut self.lines);
            }
        } else {
            self.asm.push_bytes(bytes, at, &mut self.lines);
        }
        self.events(reader)
    }

    /// True when typed input waits for an Enter or the idle flush.
    pub fn has_pending(&self) -> bool {
        !self.asm.is_empty()
    }

    /// Emits partial input idle for the configured timeout (call it periodically).
    pub fn tick(&mut self, now: Timestamp, reader: Option<u32>) -> Vec<Event> {
        if let Some(line) = self.asm.flush_idle(now, self.opts.idle_flush) {
            self.lines.push(line);
        }
        self.events(reader)
    }

    /// Emits everything pending (the session ended).
    pub fn finish(&mut self) -> Vec<Event> {
        self.lines.extend(self.asm.flush());
        self.events(None)
    }

    fn events(&mut self, reader: Option<u32>) -> Vec<Event> {
        let pid = reader.unwrap_or(self.session_pid);
        self.lines
            .drain(..)
            .map(|line| {
                let mut ev = Event::new(
                    Domain::Keystroke,
                    Activity::Input,
                    Backend { mode: Mode::User, source: SourceKind::Pty },
                );
                ev.time = line.started;
                ev.process.pid = pid;
                ev.process.session_id = self.session_pid;
                ev.process.tty = Some(self.tty.clone());
                let mut info = line.to_keystroke_info();
                info.tty = Some(self.tty.clone());
                ev.keystroke = Some(info);
                ev
            })
            .collect()
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Puts a terminal in raw mode and restores its settings when dropped.
struct RawMode<'fd> {
    fd: BorrowedFd<'fd>,
    saved: Termios,
}

impl<'fd> RawMode<'fd> {
    fn enter(fd: BorrowedFd<'fd>) -> io::Result<Self> {
        let saved = tcgetattr(fd)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(fd, SetArg::TCSAFLUSH, &raw)?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        if let Err(e) = tcsetattr(self.fd, SetArg::TCSAFLUSH, &self.saved) {
            tracing::warn!(error = %e, "could not restore the terminal's settings");
        }
    }
}

/// Runs `cmd` on a pty, relaying this process's stdin/stdout to it (stdin in raw mode when it is a terminal),
/// records the input as `keystroke`/`input` events into `events`, and returns the command's exit status once it
/// exited and its output was relayed.
pub fn record_session(cmd: &mut Command, opts: &RecorderOptions, events: &EventSender) -> io::Result<ExitStatus> {
    let stdin = io::stdin();
    let stdin_fd = stdin.as_fd();
    let stdin_is_tty = nix::unistd::isatty(stdin_fd).unwrap_or(false);
    let winsize = if stdin_is_tty { get_winsize(stdin_fd).ok() } else { None };
    let mut pty = PtyChild::spawn(cmd, winsize)?;
    let session_pid = pty.child.id();
    let _raw = if stdin_is_tty { Some(RawMode::enter(stdin_fd)?) } else { None };
    let resized = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGWINCH, resized.clone())?;
    tracing::info!(backend = NAME, tty = %pty.tty, pid = session_pid, "recording session");

    let mut recorder = InputRecorder::new(opts.clone(), pty.tty.clone(), session_pid);
    let mut stdin_open = true;
    let mut buf = vec![0u8; 64 * 1024];
    // Raw writes to fd 1: std's stdout is line-buffered, which would cost a write per line of relayed output.
    let mut stdout = File::from(io::stdout().as_fd().try_clone_to_owned()?);
    let mut last_tick = Instant::now();
    let send_all = |evs: Vec<Event>| {
        for ev in evs {
            events.send(ev);
        }
    };
    loop {
        if resized.swap(false, Ordering::Relaxed)
            && stdin_is_tty
            && let Ok(ws) = get_winsize(stdin_fd)
        {
            let _ = set_winsize(pty.master.as_fd(), &ws);
        }
        let (stdin_ready, master_ready) = {
            let mut fds = vec![PollFd::new(pty.master.as_fd(), PollFlags::POLLIN)];
            if stdin_open {
                fds.push(PollFd::new(stdin_fd, PollFlags::POLLIN));
            }
            let timeout = PollTimeout::try_from(POLL_INTERVAL).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            (fds.get(1).is_some_and(ready), ready(&fds[0]))
        };
        if master_ready {
            match (&pty.master).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // The user's terminal going away must not kill the session: output is best effort.
                    let _ = stdout.write_all(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EIO: every slave descriptor is closed (the command and its children are gone).
                Err(_) => break,
            }
        }
        if stdin_ready {
            match io::stdin().lock().read(&mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    let lflag = tcgetattr(pty.master.as_fd()).map(|t| t.local_flags).unwrap_or(LocalFlags::empty());
                    let reader = foreground_of(&pty.master);
                    (&pty.master).write_all(&buf[..n])?;
                    send_all(recorder.input(&buf[..n], lflag, reader, Timestamp::now()));
                }
            }
        }
        // Idle flush at the poll interval, not per relayed chunk: output-heavy sessions pay nothing for it.
        if last_tick.elapsed() >= POLL_INTERVAL {
            last_tick = Instant::now();
            if recorder.has_pending() {
                send_all(recorder.tick(Timestamp::now(), foreground_of(&pty.master)));
            }
        }
    }
    send_all(recorder.finish());
    let status = pty.child.wait()?;
    Ok(status)
}

/// The foreground process group of the pty (the job reading its input).
fn foreground_of(master: &File) -> Option<u32> {
    nix::unistd::tcgetpgrp(master.as_fd()).ok().and_then(|p| u32::try_from(p.as_raw()).ok()).filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const READLINE: LocalFlags = LocalFlags::ISIG; // ICANON and ECHO both off
    fn canonical_silent() -> LocalFlags {
        LocalFlags::ICANON | LocalFlags::ISIG
    }

    #[test]
    fn only_canonical_echo_off_is_secret() {
        assert!(is_secret_mode(canonical_silent()));
        assert!(!is_secret_mode(READLINE));
        assert!(!is_secret_mode(LocalFlags::ICANON | LocalFlags::ECHO));
    }

    #[test]
    fn typed_lines_become_events_and_secrets_keep_only_their_length() {
        let mut r = InputRecorder::new(RecorderOptions::default(), "pts/7".into(), 100);
        let mut evs = Vec::new();
        for b in b"read -s p\r" {
            evs.extend(r.input(&[*b], READLINE, Some(100), Timestamp(1)));
        }
        for b in b"hunter2\r" {
            evs.extend(r.input(&[*b], canonical_silent(), Some(101), Timestamp(2)));
        }
        evs.extend(r.finish());
        let got: Vec<_> = evs
            .iter()
            .map(|e| {
                let k = e.keystroke.as_ref().expect("keystroke");
                (k.text.clone(), k.keys, k.redacted, e.process.pid)
            })
            .collect();
        assert_eq!(got, vec![("read -s p".into(), Some(10), false, 100), (String::new(), Some(8), true, 101)]);
        let json = serde_json::to_string(&evs).expect("serialize");
        assert!(!json.contains("hunter2"));
        assert_eq!(evs[0].backend, Backend { mode: Mode::User, source: SourceKind::Pty });
        assert_eq!(evs[0].keystroke.as_ref().and_then(|k| k.tty.as_deref()), Some("pts/7"));
    }

    #[test]
    fn pty_child_runs_on_its_own_controlling_terminal() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "tty; ps -o tty= -p $$"]);
        let mut pty = PtyChild::spawn(&mut cmd, None).expect("spawn on a pty");
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match (&pty.master).read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        assert!(pty.child.wait().expect("wait").success());
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains(&format!("/dev/{}", pty.tty)), "{out}");
        assert!(out.lines().any(|l| l.trim() == pty.tty), "ps shows the pty as controlling terminal: {out}");
    }
}
