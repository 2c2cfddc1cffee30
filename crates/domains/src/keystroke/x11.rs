//! Keystroke domain: `x11` backend (issue #6, being built).
