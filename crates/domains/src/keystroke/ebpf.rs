//! Keystroke domain: `ebpf` backend (issue #6, being built).
