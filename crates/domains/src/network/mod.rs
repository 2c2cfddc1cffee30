//! Network domain: connections (connect, accept, listen, close with bytes and duration), UDP sends and DNS, each
//! with the acting process; and their management (block, redirect to the local proxy, throttle).
//!
//! - `ebpf`: kernel mode, monitor. `sock/inet_sock_set_state` and cgroup programs; DNS parsed from cgroup_skb.
//! - `enforce`: kernel mode, management. cgroup `sock_addr` programs evaluate the [`NetworkPlan`] rules at
//!   connect/send (block with EPERM, redirect to the proxy, tag for throttling), `sockops` hands the original
//!   destination to the proxy, a tc classifier and HTB classes apply the rates.
//! - `proxy`: the loopback proxy redirected connections reach (original destination, HTTP Host, TLS SNI, deny by
//!   host name); shared by kernel and user mode.
//! - `preload`: user mode, the hook library's connect/sendto/sendmsg/getaddrinfo/gethostbyname hooks.
//! - `sock_diag`: user mode without injection, polling the kernel's socket tables.
//!
//! [`NetworkPlan`]: ringwatch_core::compiled::NetworkPlan

pub mod ebpf;
pub mod enforce;
pub mod preload;
pub mod proxy;
pub mod sock_diag;
