//! Keystroke domain: terminal input of every session (kernel mode) and X11 input with the focused window (user
//! mode), with echo-off input redacted in the kernel and capture off unless the policy enables it.
//!
//! - `ebpf`: kernel mode. tty/pts reads at `syscalls/sys_{enter,exit}_read(v)`, redaction decided in the kernel
//!   from the terminal's termios, input assembled into lines per session.
//! - `x11`: user mode. XInput2 raw key events on one display, attributed to the focused window.
//! - `assemble`: per-session line assembly (Enter, backspace, control keys, idle flush) shared by all three.
//! - `pty`: user mode without eBPF, `ringwatch session -- CMD` records a pty session it runs.

pub mod assemble;
pub mod ebpf;
pub mod pty;
pub mod x11;
