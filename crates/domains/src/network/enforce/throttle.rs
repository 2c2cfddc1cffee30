//! Throttle rules on the wire: an HTB root qdisc (handle `1:`) with one class per throttle rule at its rate, and
//! the enforcer's tc egress classifier (`handle_enf_egress`, clsact) that puts each packet of a throttled socket
//! in its rule's class by setting `skb->priority` to `1:<class>` — HTB reads the priority before any filter.
//!
//! Unthrottled traffic is not slowed: the HTB qdisc has no `default` class, so a packet whose priority names no
//! class of ours goes to HTB's direct queue and leaves at line rate.
//!
//! The qdiscs are managed with iproute2's `tc`: the netlink crates (rtnetlink / netlink-packet-route) have no
//! HTB options, and hand-building HTB's rate tables is more code than the few `tc` calls here. The classifier
//! is attached through libbpf (`bpf_tc_attach`), so no object file needs to be pinned for `tc`.
//!
//! Safety rules: an interface whose root qdisc is not the kernel's default (handle `0:`) is never touched (an
//! administrator's shaping would be destroyed); a clsact qdisc that was already there is kept; on drop, only
//! what was added is removed, in the network namespace it was added in (the thread that calls
//! [`Throttle::setup`] chooses it), even when dropped from another thread.
//!
//! What it cannot do: ingress (download) traffic is not throttled (HTB shapes egress; ingress would need an IFB
//! device); a rule's rate is shared by all its sockets on one interface (one class per rule and interface); a
//! socket is classified by its cookie, so traffic that leaves without its socket (forwarded or NATed packets of
//! other hosts, IPsec after encapsulation) is not throttled.

use std::fs::File;
use std::os::fd::BorrowedFd;
use std::process::Command;

use libbpf_rs::{TC_EGRESS, TC_INGRESS, TcHook};
use nix::sched::CloneFlags;
use ringwatch_core::SourceError;

use super::rules::ThrottleClass;

/// Backend name in errors.
const NAME: &str = "network/enforce";

/// Handle and priority of our tc filter on clsact egress (distinctive, so it never collides with another).
const FILTER_HANDLE: u32 = 0x5257;
const FILTER_PRIORITY: u32 = 0x5257;

/// Root qdisc and clsact of one interface, as `tc qdisc show` lists them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Qdiscs {
    /// (kind, handle) of the root qdisc, when there is one.
    root: Option<(String, String)>,
    clsact: bool,
}

/// What was added on one interface.
#[derive(Debug)]
struct Iface {
    name: String,
    hook: TcHook,
    htb_added: bool,
    filter_attached: bool,
    clsact_added: bool,
}

/// HTB classes and the classifier on the chosen interfaces; removed on drop.
#[derive(Debug)]
pub struct Throttle {
    /// The network namespace the interfaces live in (`/proc/thread-self/ns/net` at setup).
    netns: File,
    ifaces: Vec<Iface>,
}

impl Throttle {
    /// Sets up `classes` on `names` (empty: every interface that is up), classifying with `prog` (the loaded
    /// `handle_enf_egress`). An explicitly named interface that cannot be set up is an error; with `names` empty
    /// such interfaces are skipped and reported in the returned warnings.
    pub fn setup(
        names: &[String],
        classes: &[ThrottleClass],
        prog: BorrowedFd<'_>,
    ) -> Result<(Throttle, Vec<String>), SourceError> {
        probe_tc()?;
        let netns = File::open("/proc/thread-self/ns/net").map_err(|e| failed("open network namespace", e))?;
        let explicit = !names.is_empty();
        let names = if explicit { names.to_vec() } else { up_interfaces()? };
        let mut throttle = Throttle { netns, ifaces: Vec::new() };
        let mut warnings = Vec::new();
        for name in &names {
            match throttle.setup_iface(name, classes, prog) {
                Ok(()) => {}
                Err(e) if !explicit => warnings.push(format!("throttle not applied on {name}: {e}")),
                Err(e) => return Err(e), // `throttle` drops here and removes what was added
            }
        }
        if throttle.ifaces.is_empty() {
            return Err(SourceError::Failed {
                backend: NAME,
                step: "throttle".into(),
                message: format!("no interface could be set up ({})", warnings.join("; ")),
            });
        }
        Ok((throttle, warnings))
    }

    /// The interfaces that were set up.
    pub fn interfaces(&self) -> Vec<&str> {
        self.ifaces.iter().map(|i| i.name.as_str()).collect()
    }

    fn setup_iface(&mut self, name: &str, classes: &[ThrottleClass], prog: BorrowedFd<'_>) -> Result<(), SourceError> {
        let ifindex = nix::net::if_::if_nametoindex(name)
            .map_err(|e| failed(&format!("find interface {name}"), std::io::Error::from(e)))?;
        let before = qdiscs(name)?;
        if let Some((kind, handle)) = &before.root
            && handle != "0:"
        {
            return Err(SourceError::Failed {
                backend: NAME,
                step: format!("throttle {name}"),
                message: format!(
                    "root qdisc {kind} {handle} was configured by someone else; refusing to replace it (remove it or \
                     leave {name} out of throttle_interfaces)"
                ),
            });
        }
        let mut hook = TcHook::new(prog);
        hook.ifindex(ifindex as i32).handle(FILTER_HANDLE).priority(FILTER_PRIORITY);
        self.ifaces.push(Iface {
            name: name.to_owned(),
            hook,
            htb_added: false,
            filter_attached: false,
            clsact_added: false,
        });
        let iface = self.ifaces.last_mut().expect("pushed just above");
        tc(&["qdisc", "replace", "dev", name, "root", "handle", "1:", "htb"])?;
        iface.htb_added = true;
        for class in classes {
            let bits = class.bytes_per_sec.saturating_mul(8).to_string() + "bit";
            // A burst of 1/50 s of traffic, at least 64 KiB (one GSO packet): smaller bursts cost accuracy.
            let burst = (class.bytes_per_sec / 50).max(64 * 1024).to_string() + "b";
            let classid = format!("1:{:x}", class.minor);
            tc(&[
                "class", "add", "dev", name, "parent", "1:", "classid", &classid, "htb", "rate", &bits, "ceil", &bits,
                "burst", &burst, "cburst", &burst,
            ])?;
        }
        if !before.clsact {
            iface.hook.attach_point(TC_EGRESS | TC_INGRESS);
            iface.hook.create().map_err(|e| libbpf(&format!("create clsact on {name}"), &e))?;
            iface.clsact_added = true;
        }
        iface.hook.attach_point(TC_EGRESS);
        iface.hook.attach().map_err(|e| libbpf(&format!("attach classifier on {name}"), &e))?;
        iface.filter_attached = true;
        tracing::info!(backend = NAME, iface = name, classes = classes.len(), "throttle set up");
        Ok(())
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        let ifaces = std::mem::take(&mut self.ifaces);
        if ifaces.is_empty() {
            return;
        }
        let Ok(netns) = self.netns.try_clone() else { return };
        // setns is per thread: tear down on a thread of its own in the namespace the interfaces are in.
        let worker = std::thread::Builder::new().name("rw-throttle-down".into()).spawn(move || {
            if let Err(e) = nix::sched::setns(&netns, CloneFlags::CLONE_NEWNET) {
                tracing::warn!(backend = NAME, error = %e, "cannot enter the throttle namespace; qdiscs left as they are");
                return;
            }
            for mut iface in ifaces {
                teardown(&mut iface);
            }
        });
        if let Ok(worker) = worker {
            let _ = worker.join();
        }
    }
}

fn teardown(iface: &mut Iface) {
    let name = iface.name.clone();
    if iface.filter_attached {
        iface.hook.attach_point(TC_EGRESS);
        if let Err(e) = iface.hook.detach() {
            tracing::warn!(backend = NAME, iface = %name, error = %e, "detach classifier");
        }
    }
    if iface.clsact_added {
        iface.hook.attach_point(TC_EGRESS | TC_INGRESS);
        if let Err(e) = iface.hook.destroy() {
            tracing::warn!(backend = NAME, iface = %name, error = %e, "remove clsact");
        }
    }
    if iface.htb_added {
        // Only our own root: if someone replaced it meanwhile, theirs stays.
        match qdiscs(&name) {
            Ok(Qdiscs { root: Some((kind, handle)), .. }) if kind == "htb" && handle == "1:" => {
                if let Err(e) = tc(&["qdisc", "del", "dev", &name, "root", "handle", "1:", "htb"]) {
                    tracing::warn!(backend = NAME, iface = %name, error = %e, "remove HTB");
                }
            }
            Ok(_) => tracing::warn!(backend = NAME, iface = %name, "root qdisc is no longer ours; left in place"),
            Err(e) => tracing::debug!(backend = NAME, iface = %name, error = %e, "interface gone"),
        }
    }
}

/// Checks that `tc` runs.
fn probe_tc() -> Result<(), SourceError> {
    match Command::new("tc").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(SourceError::Unsupported {
            backend: NAME,
            what: format!("`tc -V` failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
        }),
        Err(e) => Err(SourceError::Unsupported {
            backend: NAME,
            what: format!("throttling needs iproute2's `tc` (apt-get install iproute2): {e}"),
        }),
    }
}

/// Runs `tc ARGS`; a failure carries tc's stderr.
fn tc(args: &[&str]) -> Result<String, SourceError> {
    let out = Command::new("tc").args(args).output().map_err(|e| failed("run tc", e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(SourceError::Failed {
            backend: NAME,
            step: format!("tc {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn qdiscs(name: &str) -> Result<Qdiscs, SourceError> {
    Ok(parse_qdiscs(&tc(&["qdisc", "show", "dev", name])?))
}

/// Parses `tc qdisc show dev X`: `qdisc <kind> <handle> [dev X] root ...` and `qdisc clsact ffff: parent ...`.
fn parse_qdiscs(text: &str) -> Qdiscs {
    let mut q = Qdiscs::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 3 || words[0] != "qdisc" {
            continue;
        }
        if words.contains(&"root") {
            q.root = Some((words[1].to_owned(), words[2].to_owned()));
        }
        if words[1] == "clsact" {
            q.clsact = true;
        }
    }
    q
}

/// Names of the interfaces that are up, in the calling thread's namespace.
fn up_interfaces() -> Result<Vec<String>, SourceError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| failed("list interfaces", std::io::Error::from(e)))?;
    let mut names: Vec<String> =
        addrs.filter(|a| a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP)).map(|a| a.interface_name).collect();
    names.sort();
    names.dedup();
    Ok(names)
}

fn failed(step: &str, e: std::io::Error) -> SourceError {
    SourceError::Failed { backend: NAME, step: step.to_owned(), message: e.to_string() }
}

fn libbpf(step: &str, e: &libbpf_rs::Error) -> SourceError {
    SourceError::Failed { backend: NAME, step: step.to_owned(), message: format!("{e:#}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qdisc_listing_tells_default_root_from_configured_and_sees_clsact() {
        let q = parse_qdiscs("qdisc noqueue 0: root refcnt 2 \n");
        assert_eq!(q, Qdiscs { root: Some(("noqueue".into(), "0:".into())), clsact: false });
        let q = parse_qdiscs(
            "qdisc htb 1: root refcnt 2 r2q 10 default 0 direct_packets_stat 3\nqdisc pfifo 8001: parent 1:1 limit \
             1000p\nqdisc clsact ffff: parent ffff:fff1 \n",
        );
        assert_eq!(q, Qdiscs { root: Some(("htb".into(), "1:".into())), clsact: true });
        let q = parse_qdiscs("qdisc pfifo_fast 0: dev eth0 root refcnt 2 bands 3 priomap 1 2 2\n");
        assert_eq!(q.root, Some(("pfifo_fast".into(), "0:".into())));
    }
}
