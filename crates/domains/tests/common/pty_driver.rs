//! A command on a pty the test owns, typed into key by key like a person (readline reads one key per read), its
//! output drained by a thread so the test can wait for what the command printed. Shared by the keystroke tests of
//! this crate and, through `#[path]`, by the ringwatch binary's keystroke end-to-end test.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringwatch_domains::keystroke::pty::PtyChild;

/// The shell prompt [`PtyDriver::start`] sets and waits for.
pub const PROMPT: &str = "ready$ ";

/// A command on a pty, its output collected by a thread.
pub struct PtyDriver {
    /// The pty pair and the child on it.
    pub pty: PtyChild,
    /// Everything the command printed so far.
    pub output: Arc<Mutex<Vec<u8>>>,
}

impl PtyDriver {
    /// Spawns `cmd` (a shell, or something that runs one) on a new pty with [`PROMPT`] as `PS1`, no history file
    /// and `TERM=xterm`, and waits for the first prompt.
    pub fn start(cmd: &mut Command) -> PtyDriver {
        cmd.env("PS1", PROMPT).env("HISTFILE", "/dev/null").env("TERM", "xterm");
        let pty = PtyChild::spawn(cmd, None).expect("command on a pty");
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut master = pty.master.try_clone().expect("clone master");
        let sink = output.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 64 * 1024];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("output lock").extend_from_slice(&buf[..n]);
            }
        });
        let driver = PtyDriver { pty, output };
        driver.wait_output(PROMPT, 1);
        driver
    }

    /// The pid of the command on the pty.
    pub fn pid(&self) -> u32 {
        self.pty.child.id()
    }

    /// Types `text` one key at a time, as a person (and readline's per-key reads) would.
    pub fn type_keys(&self, text: &str) {
        let mut master = &self.pty.master;
        for b in text.as_bytes() {
            master.write_all(&[*b]).expect("type a key");
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until `needle` appeared `count` times in the output.
    pub fn wait_output(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = String::from_utf8_lossy(&self.output.lock().expect("output lock")).into_owned();
            if out.matches(needle).count() >= count {
                return;
            }
            assert!(Instant::now() < deadline, "waited for {needle:?} x{count}; output so far: {out}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `exit` and waits for the shell to end; a shell still there after 10 s (a key lost on a loaded
    /// machine) is killed, so a test never hangs here.
    pub fn exit(mut self) {
        self.type_keys("exit\r");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.pty.child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.pty.child.kill();
        let _ = self.pty.child.wait();
    }
}
