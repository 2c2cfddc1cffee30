//! Network domain: `proxy` backend (issue #5, being built).
