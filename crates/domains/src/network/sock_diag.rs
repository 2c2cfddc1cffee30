//! Network domain: `sock_diag` backend (issue #5, being built).
