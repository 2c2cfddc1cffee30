//! The backend registry: every domain×mode backend, how to probe it, how `--mode` selects it, how to start it.
//!
//! `--mode` takes `DOMAIN=CHOICE` pairs separated by commas; `all=` sets every domain. A CHOICE is `best` (kernel
//! if it can run here, else user mode), `kernel`, `user` (every user-mode backend of the domain), `both`, `off`,
//! or one source by name (`process=proc_connector`). Later pairs override earlier ones.

use std::path::PathBuf;
use std::sync::Arc;

use ringwatch_core::compiled::{ExecKillList, FilePermissionPlan, KeystrokePlan, NetworkPlan};
use ringwatch_core::{Decider, Domain, Mode, Probe, Source, SourceError, SourceKind};
use ringwatch_domains::file::ebpf::{FileEbpf, FileEbpfConfig};
use ringwatch_domains::file::fanotify::{FileFanotify, FileFanotifyConfig};
use ringwatch_domains::file::preload::FilePreload;
use ringwatch_domains::keystroke::ebpf::KeystrokeEbpf;
use ringwatch_domains::keystroke::x11::{KeystrokeX11, X11Config};
use ringwatch_domains::network::ebpf::{NetworkEbpf, NetworkEbpfConfig};
use ringwatch_domains::network::preload::{NetVerdicts, NetworkPreload, NetworkPreloadConfig};
use ringwatch_domains::network::proxy::{self, ProxyConfig};
use ringwatch_domains::network::sock_diag::{NetworkSockDiag, SockDiagConfig};
use ringwatch_domains::process::kernel::ProcessKernel;
use ringwatch_domains::process::preload::ProcessPreload;
use ringwatch_domains::process::proc_connector::ProcessProcConnector;

use crate::UsageError;

/// One backend ringwatch knows about (built or not yet).
#[derive(Debug, Clone, Copy)]
pub struct BackendSpec {
    /// Domain it serves.
    pub domain: Domain,
    /// Kernel or user.
    pub mode: Mode,
    /// Mechanism.
    pub source: SourceKind,
    /// The issue that will build it, for backends not built yet.
    pub planned_in: Option<u32>,
}

/// Every backend, in `probe` display order.
pub const BACKENDS: &[BackendSpec] = &[
    BackendSpec { domain: Domain::Process, mode: Mode::Kernel, source: SourceKind::Ebpf, planned_in: None },
    BackendSpec { domain: Domain::Process, mode: Mode::User, source: SourceKind::ProcConnector, planned_in: None },
    BackendSpec { domain: Domain::Process, mode: Mode::User, source: SourceKind::Preload, planned_in: None },
    BackendSpec { domain: Domain::File, mode: Mode::Kernel, source: SourceKind::Fanotify, planned_in: None },
    // Beside fanotify (`file=kernel` and `best` start both): refused calls, open/rename flags, chmod modes.
    BackendSpec { domain: Domain::File, mode: Mode::Kernel, source: SourceKind::Ebpf, planned_in: None },
    BackendSpec { domain: Domain::File, mode: Mode::User, source: SourceKind::Preload, planned_in: None },
    BackendSpec { domain: Domain::Network, mode: Mode::Kernel, source: SourceKind::Ebpf, planned_in: None },
    BackendSpec { domain: Domain::Network, mode: Mode::User, source: SourceKind::Preload, planned_in: None },
    // Beside the hooks (`network=user` starts both): no injection, sees every process, misses short connections.
    BackendSpec { domain: Domain::Network, mode: Mode::User, source: SourceKind::SockDiag, planned_in: None },
    BackendSpec { domain: Domain::Keystroke, mode: Mode::Kernel, source: SourceKind::Ebpf, planned_in: None },
    BackendSpec { domain: Domain::Keystroke, mode: Mode::User, source: SourceKind::X11, planned_in: None },
];

impl BackendSpec {
    /// `domain/source` as used in logs and sensor events, e.g. `process/ebpf`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.domain, self.source.as_str())
    }

    /// Whether this backend can run here.
    pub fn probe(&self) -> Probe {
        if let Some(issue) = self.planned_in {
            return Probe::unavailable(self.domain, self.mode, self.source, format!("not built yet (issue #{issue})"));
        }
        match (self.domain, self.source) {
            (Domain::Process, SourceKind::Ebpf) => ProcessKernel::probe(),
            (Domain::Process, SourceKind::ProcConnector) => ProcessProcConnector::probe(),
            (Domain::Process, SourceKind::Preload) => ProcessPreload::probe(),
            (Domain::File, SourceKind::Fanotify) => FileFanotify::probe(),
            (Domain::File, SourceKind::Ebpf) => FileEbpf::probe(),
            (Domain::File, SourceKind::Preload) => FilePreload::probe(),
            (Domain::Network, SourceKind::Ebpf) => NetworkEbpf::probe(),
            (Domain::Network, SourceKind::Preload) => NetworkPreload::probe(),
            (Domain::Network, SourceKind::SockDiag) => NetworkSockDiag::probe(),
            (Domain::Keystroke, SourceKind::Ebpf) => KeystrokeEbpf::probe(),
            (Domain::Keystroke, SourceKind::X11) => KeystrokeX11::probe(),
            _ => Probe::unavailable(self.domain, self.mode, self.source, "unknown backend"),
        }
    }

    /// Starts it (every fallible set-up step happens here, before the agent reports itself running).
    pub fn start(&self, cfg: &StartConfig) -> Result<Box<dyn Source>, SourceError> {
        match (self.domain, self.source) {
            (Domain::Process, SourceKind::Ebpf) => Ok(Box::new(ProcessKernel::start(&cfg.exec_kill_list)?)),
            (Domain::Process, SourceKind::ProcConnector) => Ok(Box::new(ProcessProcConnector::start()?)),
            (Domain::Process, SourceKind::Preload) => {
                Ok(Box::new(ProcessPreload::start(&cfg.hook_socket, cfg.decider.clone())?))
            }
            (Domain::File, SourceKind::Fanotify) => Ok(Box::new(FileFanotify::start_with_permissions(
                &cfg.file,
                &cfg.file_permission,
                cfg.decider.clone(),
            )?)),
            (Domain::File, SourceKind::Ebpf) => Ok(Box::new(FileEbpf::start(FileEbpfConfig::default())?)),
            // Shares the hook socket with process/preload when both run (see ringwatch_domains::preload).
            (Domain::File, SourceKind::Preload) => {
                Ok(Box::new(FilePreload::start(&cfg.hook_socket, cfg.decider.clone())?))
            }
            // Monitor; the plan's block/redirect/throttle rules start the kernel enforcer inside it.
            (Domain::Network, SourceKind::Ebpf) => Ok(Box::new(NetworkEbpf::start(&NetworkEbpfConfig {
                plan: cfg.network.clone(),
                dns: cfg.network_dns,
                ..NetworkEbpfConfig::default()
            })?)),
            // Shares the hook socket with the other preload backends, and the proxy with network/kernel.
            (Domain::Network, SourceKind::Preload) => {
                if cfg.network.needs_proxy() {
                    let proxy = proxy::shared(&ProxyConfig::default())?;
                    proxy.set_host_rules(&cfg.network.host_rules)?;
                    Ok(Box::new(NetworkPreload::start_with_proxy(
                        &cfg.hook_socket,
                        cfg.decider.clone(),
                        NetVerdicts::Auto,
                        proxy,
                    )?))
                } else {
                    Ok(Box::new(NetworkPreload::start(
                        &cfg.hook_socket,
                        cfg.decider.clone(),
                        NetworkPreloadConfig::default(),
                    )?))
                }
            }
            (Domain::Network, SourceKind::SockDiag) => Ok(Box::new(NetworkSockDiag::start(SockDiagConfig::default())?)),
            // Loads only when the policy enables capture (probe_for reports it unavailable otherwise); prints the
            // capture notice on stderr and sends it as a sensor/start event.
            (Domain::Keystroke, SourceKind::Ebpf) => Ok(Box::new(KeystrokeEbpf::start(&cfg.keystroke)?)),
            (Domain::Keystroke, SourceKind::X11) => Ok(Box::new(KeystrokeX11::start(&X11Config {
                display: cfg.x11_display.clone(),
                plan: cfg.keystroke.clone(),
            })?)),
            _ => Err(SourceError::Unsupported { backend: "agent", what: format!("{} is not built yet", self.label()) }),
        }
    }
}

/// What backends need to start.
pub struct StartConfig {
    /// Exec rules the kernel enforces itself.
    pub exec_kill_list: ExecKillList,
    /// The policy, for synchronous verdicts (hooks).
    pub decider: Arc<dyn Decider>,
    /// Where the hook library reports.
    pub hook_socket: PathBuf,
    /// The file monitor's exclusions (the agent's own output, store and spool) and limits.
    pub file: FileFanotifyConfig,
    /// Opens and execs the fanotify permission group holds for a verdict (empty: no permission group).
    pub file_permission: FilePermissionPlan,
    /// Network rules enforced in the kernel (block, redirect, throttle) and host rules for the proxy.
    pub network: NetworkPlan,
    /// The policy's `network.dns`: the kernel monitor captures DNS (default true).
    pub network_dns: bool,
    /// Keystroke capture settings (capture is off unless the policy enables it).
    pub keystroke: KeystrokePlan,
    /// The X display the X11 keystroke backend watches (`run --x11-display`); `None`: the agent's `$DISPLAY`.
    pub x11_display: Option<String>,
}

/// What `--mode` asks for one domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Kernel if available, else user mode.
    Best,
    /// Kernel backends only.
    Kernel,
    /// User backends only.
    User,
    /// Kernel and user backends side by side (for comparison).
    Both,
    /// Nothing.
    Off,
    /// One named source.
    Only(SourceKind),
}

impl Choice {
    fn parse(s: &str) -> Option<Choice> {
        Some(match s {
            "best" => Choice::Best,
            "kernel" => Choice::Kernel,
            "user" => Choice::User,
            "both" => Choice::Both,
            "off" => Choice::Off,
            "ebpf" => Choice::Only(SourceKind::Ebpf),
            "fanotify" => Choice::Only(SourceKind::Fanotify),
            "proc_connector" => Choice::Only(SourceKind::ProcConnector),
            "preload" => Choice::Only(SourceKind::Preload),
            "sock_diag" => Choice::Only(SourceKind::SockDiag),
            "x11" => Choice::Only(SourceKind::X11),
            _ => return None,
        })
    }
}

/// Per-domain choices, from a `--mode` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeSpec {
    choices: Vec<(Domain, Choice)>,
}

impl ModeSpec {
    /// Parses `process=kernel,file=user` / `all=both`. Unknown domains or choices are usage errors.
    pub fn parse(spec: &str) -> Result<ModeSpec, UsageError> {
        let mut choices: Vec<(Domain, Choice)> = Domain::MONITORED.iter().map(|d| (*d, Choice::Best)).collect();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (domain, choice) = pair
                .split_once('=')
                .ok_or_else(|| UsageError(format!("--mode: `{pair}` is not DOMAIN=CHOICE (e.g. process=kernel)")))?;
            let choice = Choice::parse(choice.trim()).ok_or_else(|| {
                UsageError(format!(
                    "--mode: unknown choice `{choice}` for {domain}; use best, kernel, user, both, off, or a source \
                     (ebpf, fanotify, proc_connector, preload, sock_diag, x11)"
                ))
            })?;
            let targets: Vec<Domain> = match domain.trim() {
                "all" => Domain::MONITORED.to_vec(),
                name => vec![*Domain::MONITORED.iter().find(|d| d.as_str() == name).ok_or_else(|| {
                    UsageError(format!("--mode: unknown domain `{name}`; use process, file, network, keystroke or all"))
                })?],
            };
            for (d, c) in choices.iter_mut() {
                if targets.contains(d) {
                    *c = choice;
                }
            }
        }
        Ok(ModeSpec { choices })
    }

    /// The choice for `domain`.
    pub fn choice(&self, domain: Domain) -> Choice {
        self.choices.iter().find(|(d, _)| *d == domain).map(|(_, c)| *c).unwrap_or(Choice::Best)
    }

    /// True when the user named this domain explicitly with something other than `best`/`off` (then a backend that
    /// cannot start is an error instead of a fallback).
    pub fn is_explicit(&self, domain: Domain) -> bool {
        !matches!(self.choice(domain), Choice::Best | Choice::Off)
    }
}

/// The backends of `domain` selected by `choice`, given probe results.
///
/// For `Best`: the kernel backends when they probe available; otherwise the available user backends. Backends not
/// built yet are never selected by `Best`, and are reported by the caller.
pub fn select(domain: Domain, choice: Choice, probes: &[(BackendSpec, Probe)]) -> Vec<(BackendSpec, Probe)> {
    let of_domain = probes.iter().filter(|(s, _)| s.domain == domain).cloned();
    match choice {
        Choice::Off => Vec::new(),
        Choice::Kernel => of_domain.filter(|(s, _)| s.mode == Mode::Kernel).collect(),
        Choice::User => of_domain.filter(|(s, _)| s.mode == Mode::User).collect(),
        Choice::Both => of_domain.collect(),
        Choice::Only(src) => of_domain.filter(|(s, _)| s.source == src).collect(),
        Choice::Best => {
            let all: Vec<_> = of_domain.filter(|(_, p)| p.available).collect();
            let kernel: Vec<_> = all.iter().filter(|(s, _)| s.mode == Mode::Kernel).cloned().collect();
            if kernel.is_empty() { all } else { kernel }
        }
    }
}

/// Probes every backend.
pub fn probe_all() -> Vec<(BackendSpec, Probe)> {
    BACKENDS.iter().map(|s| (*s, s.probe())).collect()
}

/// Probes every backend as `run` will start it: the X11 backend probes the configured display.
pub fn probe_for(cfg: &StartConfig) -> Vec<(BackendSpec, Probe)> {
    BACKENDS
        .iter()
        .map(|s| match (s.domain, s.source, s.planned_in) {
            // Keystrokes are captured only when the policy says so: otherwise no keystroke backend is even loaded.
            (Domain::Keystroke, _, None) if !cfg.keystroke.enabled => {
                let why = "keystroke capture is off (the policy does not enable it)";
                (*s, Probe::unavailable(s.domain, s.mode, s.source, why))
            }
            (Domain::Keystroke, SourceKind::X11, None) => (*s, KeystrokeX11::probe_display(cfg.x11_display.as_deref())),
            (Domain::Network, SourceKind::Ebpf, None) if !cfg.network_dns => {
                let mut p = s.probe();
                if p.available {
                    p.detail.push_str("; DNS capture off (policy network.dns: false)");
                }
                (*s, p)
            }
            _ => (*s, s.probe()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_spec_parses_pairs_and_all() {
        let m = ModeSpec::parse("all=user,process=kernel").expect("valid");
        assert_eq!(m.choice(Domain::Process), Choice::Kernel);
        assert_eq!(m.choice(Domain::File), Choice::User);
        let m = ModeSpec::parse("process=proc_connector").expect("valid");
        assert_eq!(m.choice(Domain::Process), Choice::Only(SourceKind::ProcConnector));
        assert_eq!(m.choice(Domain::Network), Choice::Best);
        assert_eq!(ModeSpec::parse("").expect("empty is default").choice(Domain::Keystroke), Choice::Best);
    }

    #[test]
    fn mode_spec_rejects_bad_input() {
        for bad in ["process", "proc=kernel", "process=fast", "all"] {
            assert!(ModeSpec::parse(bad).is_err(), "{bad} must be rejected");
        }
    }

    fn fake(domain: Domain, mode: Mode, source: SourceKind, available: bool) -> (BackendSpec, Probe) {
        let spec = BackendSpec { domain, mode, source, planned_in: None };
        let probe = if available {
            Probe::ok(domain, mode, source, "ok")
        } else {
            Probe::unavailable(domain, mode, source, "no")
        };
        (spec, probe)
    }

    #[test]
    fn best_prefers_kernel_and_falls_back_to_user() {
        let with_kernel = [
            fake(Domain::Process, Mode::Kernel, SourceKind::Ebpf, true),
            fake(Domain::Process, Mode::User, SourceKind::ProcConnector, true),
        ];
        let picked = select(Domain::Process, Choice::Best, &with_kernel);
        assert_eq!(picked.iter().map(|(s, _)| s.source).collect::<Vec<_>>(), vec![SourceKind::Ebpf]);
        let without_kernel = [
            fake(Domain::Process, Mode::Kernel, SourceKind::Ebpf, false),
            fake(Domain::Process, Mode::User, SourceKind::ProcConnector, true),
            fake(Domain::Process, Mode::User, SourceKind::Preload, false),
        ];
        let picked = select(Domain::Process, Choice::Best, &without_kernel);
        assert_eq!(picked.iter().map(|(s, _)| s.source).collect::<Vec<_>>(), vec![SourceKind::ProcConnector]);
    }

    #[test]
    fn file_kernel_starts_fanotify_and_ebpf_and_a_source_name_picks_one() {
        let probes = [
            fake(Domain::File, Mode::Kernel, SourceKind::Fanotify, true),
            fake(Domain::File, Mode::Kernel, SourceKind::Ebpf, true),
            fake(Domain::File, Mode::User, SourceKind::Preload, true),
        ];
        let sources = |c: Choice| select(Domain::File, c, &probes).iter().map(|(s, _)| s.source).collect::<Vec<_>>();
        assert_eq!(sources(Choice::Kernel), vec![SourceKind::Fanotify, SourceKind::Ebpf]);
        assert_eq!(sources(Choice::Best), vec![SourceKind::Fanotify, SourceKind::Ebpf]);
        assert_eq!(sources(Choice::Only(SourceKind::Ebpf)), vec![SourceKind::Ebpf]);
        assert_eq!(sources(Choice::Only(SourceKind::Fanotify)), vec![SourceKind::Fanotify]);
    }
}
