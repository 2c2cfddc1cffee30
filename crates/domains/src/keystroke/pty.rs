//! Keystroke domain: `pty` backend (issue #6, being built).
