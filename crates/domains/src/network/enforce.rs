//! Network domain: `enforce` backend (issue #5, being built).
