//! The X11 part of `ringwatch bench keystroke`: a private X display (Xvfb) with one titled xterm, typed into with
//! xdotool (XTEST input, the way keyboard keys reach the server), for the `keystroke/x11` backend.
//!
//! The session lives for the whole bench run; the X11 configuration's agent watches its display
//! (`--x11-display`). Typing is paced like the terminal typing workload: one `echo typed-line-N` line + Return at a
//! time, each line's keys sent by xdotool with a small delay, then a pause so that the average is the requested
//! characters per second.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Title of the xterm typed into; events of the X11 configuration are matched on it.
pub(crate) const XTERM_TITLE: &str = "ringwatch-bench-x11";

/// An Xvfb with an xterm on it; both stopped on drop.
pub(crate) struct X11Session {
    xvfb: Child,
    xterm: Child,
    display: String,
    window: String,
}

impl X11Session {
    /// Starts Xvfb on a free display and an xterm running `cat` on it; an error names what is missing.
    pub(crate) fn start() -> Result<X11Session> {
        for tool in ["Xvfb", "xterm", "xdotool"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !found {
                bail!("{tool} is not installed (scripts/install-deps.sh installs xvfb, xterm, xdotool)");
            }
        }
        // -displayfd 1: the server picks a free display and prints its number once it accepts clients.
        let mut xvfb = Command::new("Xvfb")
            .args(["-displayfd", "1", "-nolisten", "tcp", "-screen", "0", "1024x768x24"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting Xvfb")?;
        let mut line = String::new();
        BufReader::new(xvfb.stdout.take().context("Xvfb stdout")?).read_line(&mut line)?;
        let Ok(number) = line.trim().parse::<u32>() else {
            stop(&mut xvfb);
            bail!("Xvfb did not start (printed {line:?})");
        };
        let display = format!(":{number}");
        let xterm = Command::new("xterm")
            .args(["-T", XTERM_TITLE, "-e", "cat"])
            .env("DISPLAY", &display)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let xterm = match xterm {
            Ok(x) => x,
            Err(e) => {
                stop(&mut xvfb);
                return Err(e).context("starting xterm");
            }
        };
        let mut session = X11Session { xvfb, xterm, display, window: String::new() };
        let found = session.xdotool(&["search", "--sync", "--onlyvisible", "--name", &format!("^{XTERM_TITLE}$")])?;
        session.window = found.lines().next().context("xdotool found no xterm window")?.to_owned();
        session.xdotool(&["windowfocus", "--sync", &session.window])?;
        Ok(session)
    }

    /// The agent arguments that point the X11 backend at this display.
    pub(crate) fn agent_args(&self) -> Vec<OsString> {
        vec!["--x11-display".into(), self.display.clone().into()]
    }

    fn xdotool(&self, args: &[&str]) -> Result<String> {
        let out =
            Command::new("xdotool").args(args).env("DISPLAY", &self.display).output().context("running xdotool")?;
        if !out.status.success() {
            bail!("xdotool {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Types `echo typed-line-N` + Return lines into the xterm at `chars_per_second` on average for `seconds`;
    /// returns (lines typed, wall seconds).
    pub(crate) fn type_lines(&self, chars_per_second: u64, seconds: u64) -> Result<(u64, f64)> {
        self.xdotool(&["windowfocus", "--sync", &self.window])?;
        let per_key = Duration::from_nanos(1_000_000_000 / chars_per_second.max(1));
        let t0 = Instant::now();
        let mut keys = 0u32;
        let mut typed = 0u64;
        while t0.elapsed() < Duration::from_secs(seconds) {
            let line = format!("echo typed-line-{typed:05}");
            // 4 ms between keys: faster than the target, so the pause below sets the pace.
            self.xdotool(&["type", "--delay", "4", &line])?;
            self.xdotool(&["key", "Return"])?;
            keys += u32::try_from(line.len() + 1)?;
            typed += 1;
            if let Some(wait) = (per_key * keys).checked_sub(t0.elapsed()) {
                thread::sleep(wait);
            }
        }
        Ok((typed, t0.elapsed().as_secs_f64()))
    }
}

fn stop(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SIGTERM so Xvfb removes its lock file and socket.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
    let _ = child.wait();
}

impl Drop for X11Session {
    fn drop(&mut self) {
        stop(&mut self.xterm);
        stop(&mut self.xvfb);
    }
}
