//! Network domain: `preload` backend (issue #5, being built).
