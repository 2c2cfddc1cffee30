//! Network domain: `ebpf` backend (issue #5, being built).
