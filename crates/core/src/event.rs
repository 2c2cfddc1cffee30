//! The event contract (DESIGN.md §4): one JSON object per event, OCSF-aligned.
//!
//! Every backend, kernel or user mode, emits this same [`Event`]; only [`Backend`] and `trusted` tell them apart.
//! Optional fields are omitted from the JSON when unknown rather than written as empty strings, so a consumer can
//! tell "not known" from "empty".

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, Serializer};

/// OCSF class ids used by ringwatch.
pub mod class_uid {
    /// OCSF File System Activity.
    pub const FILE: u32 = 1001;
    /// OCSF Process Activity.
    pub const PROCESS: u32 = 1007;
    /// OCSF Network Activity.
    pub const NETWORK: u32 = 4001;
    /// OCSF DNS Activity.
    pub const DNS: u32 = 4003;
    /// ringwatch extension: keystroke input (OCSF reserves 99xxxx-style ids for extensions; we use 9001).
    pub const KEYSTROKE: u32 = 9001;
    /// ringwatch extension: the sensor's own health (start, stop, drops, errors).
    pub const SENSOR: u32 = 9000;
}

/// Which of the four domains (plus the sensor itself) an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    /// Process lifecycle: fork, exec, exit.
    Process,
    /// File system activity.
    File,
    /// Network connections and DNS.
    Network,
    /// Keystroke input.
    Keystroke,
    /// The sensor's own health.
    Sensor,
}

impl Domain {
    /// The four monitored domains, in display order.
    pub const MONITORED: [Domain; 4] = [Domain::Process, Domain::File, Domain::Network, Domain::Keystroke];

    /// The lowercase name used in JSON, the CLI and policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Process => "process",
            Domain::File => "file",
            Domain::Network => "network",
            Domain::Keystroke => "keystroke",
            Domain::Sensor => "sensor",
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened. The valid set depends on the [`Domain`] (DESIGN.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // the names are the contract's words
pub enum Activity {
    Fork,
    Exec,
    Exit,
    Open,
    Create,
    Write,
    Delete,
    Rename,
    Chmod,
    Connect,
    Accept,
    Listen,
    Close,
    Send,
    Dns,
    Input,
    Start,
    Stop,
    Drop,
    Tamper,
    Error,
}

impl Activity {
    /// The lowercase name used in JSON and policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Fork => "fork",
            Activity::Exec => "exec",
            Activity::Exit => "exit",
            Activity::Open => "open",
            Activity::Create => "create",
            Activity::Write => "write",
            Activity::Delete => "delete",
            Activity::Rename => "rename",
            Activity::Chmod => "chmod",
            Activity::Connect => "connect",
            Activity::Accept => "accept",
            Activity::Listen => "listen",
            Activity::Close => "close",
            Activity::Send => "send",
            Activity::Dns => "dns",
            Activity::Input => "input",
            Activity::Start => "start",
            Activity::Stop => "stop",
            Activity::Drop => "drop",
            Activity::Tamper => "tamper",
            Activity::Error => "error",
        }
    }
}

impl fmt::Display for Activity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kernel or user mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// In the kernel: eBPF, fanotify.
    Kernel,
    /// In user space: netlink, preload hooks, X11.
    User,
}

impl Mode {
    /// The lowercase name used in JSON and on the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Kernel => "kernel",
            Mode::User => "user",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which backend produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backend {
    /// Kernel or user mode.
    pub mode: Mode,
    /// The mechanism.
    pub source: SourceKind,
}

/// The mechanism behind a backend (`backend.source` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// eBPF programs in the kernel.
    Ebpf,
    /// fanotify marks and permission events.
    Fanotify,
    /// The netlink process-events connector.
    ProcConnector,
    /// The LD_PRELOAD hook library inside monitored processes.
    Preload,
    /// Polling of the kernel's socket tables.
    SockDiag,
    /// The X11 server's input extensions.
    X11,
    /// A pty recorder the agent runs.
    Pty,
    /// The agent itself (sensor events).
    Agent,
}

impl SourceKind {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Ebpf => "ebpf",
            SourceKind::Fanotify => "fanotify",
            SourceKind::ProcConnector => "proc_connector",
            SourceKind::Preload => "preload",
            SourceKind::SockDiag => "sock_diag",
            SourceKind::X11 => "x11",
            SourceKind::Pty => "pty",
            SourceKind::Agent => "agent",
        }
    }
}

/// What the sensor did about the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // the names are the contract's words
pub enum Action {
    #[default]
    Observed,
    Alerted,
    Denied,
    Killed,
    Blocked,
    Redirected,
    Throttled,
}

impl Action {
    /// The lowercase name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Observed => "observed",
            Action::Alerted => "alerted",
            Action::Denied => "denied",
            Action::Killed => "killed",
            Action::Blocked => "blocked",
            Action::Redirected => "redirected",
            Action::Throttled => "throttled",
        }
    }
}

/// Wall-clock time of an event, nanoseconds since the Unix epoch; serialized as RFC 3339 UTC with nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Converts a `SystemTime` (times before the epoch clamp to 0).
    pub fn from_system_time(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        Timestamp(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// RFC 3339 with nanoseconds, UTC: `2026-11-26T07:23:32.123456789Z`.
    pub fn to_rfc3339(self) -> String {
        let mut buf = [0u8; RFC3339_LEN];
        self.write_rfc3339(&mut buf).to_owned()
    }

    /// [`Timestamp::to_rfc3339`] into a stack buffer: every event is serialized with two timestamps, so this path
    /// neither allocates nor interprets a format description. Every u64 of nanoseconds is before year 2555, so the
    /// year always has four digits.
    pub fn write_rfc3339(self, buf: &mut [u8; RFC3339_LEN]) -> &str {
        let secs = self.0 / 1_000_000_000;
        let nanos = (self.0 % 1_000_000_000) as u32;
        let days = secs / 86_400;
        let in_day = (secs % 86_400) as u32;
        // Days since 1970-01-01 to a civil date; `time` does the calendar (u64 seconds are always in its range).
        let date = time::Date::from_julian_day(UNIX_EPOCH_JULIAN_DAY + days as i32).unwrap_or(time::Date::MIN);
        let mut w = 0;
        let mut put = |value: u32, digits: usize, sep: u8| {
            for i in (0..digits).rev() {
                buf[w + i] = b'0' + (value / 10u32.pow((digits - 1 - i) as u32) % 10) as u8;
            }
            buf[w + digits] = sep;
            w += digits + 1;
        };
        put(date.year().unsigned_abs(), 4, b'-');
        put(u32::from(u8::from(date.month())), 2, b'-');
        put(u32::from(date.day()), 2, b'T');
        put(in_day / 3600, 2, b':');
        put(in_day / 60 % 60, 2, b':');
        put(in_day % 60, 2, b'.');
        put(nanos, 9, b'Z');
        // Only ASCII digits and separators were written.
        std::str::from_utf8(&buf[..]).unwrap_or_default()
    }

    /// Parses what [`Timestamp::to_rfc3339`] writes (and any RFC 3339 time).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        u64::try_from(t.unix_timestamp_nanos()).ok().map(Timestamp)
    }
}

/// Length of [`Timestamp::to_rfc3339`]'s text.
pub const RFC3339_LEN: usize = 30;

/// Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i32 = 2_440_588;

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; RFC3339_LEN];
        s.serialize_str(self.write_rfc3339(&mut buf))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s}")))
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The process an event is about, with its context (DESIGN.md §4 `process`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Process {
    /// Stable id for the process's life, never reused (see [`crate::guid`]).
    pub guid: String,
    /// Process id (thread-group id).
    pub pid: u32,
    /// Thread id that acted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Parent's guid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_guid: Option<String>,
    /// Absolute path of the executable image.
    #[serde(default)]
    pub exe: String,
    /// The kernel's short task name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comm: String,
    /// Arguments, argv[0] first.
    #[serde(default)]
    pub cmdline: Vec<String>,
    /// True when argv was longer than the capture limit and `cmdline` is cut.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cmdline_truncated: bool,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Real uid.
    pub uid: u32,
    /// Name of `uid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Real gid.
    pub gid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Session id (the session leader's pid).
    #[serde(default)]
    pub session_id: u32,
    /// Controlling terminal, e.g. `pts/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<String>,
    /// cgroup v2 path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Container id when the cgroup path names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// When the process started.
    #[serde(default)]
    pub start_time: Timestamp,
    /// Ancestors' guids, parent first, up to the first process the table does not know.
    #[serde(default)]
    pub ancestry: Vec<String>,
    /// Exit status for `exit` events (the value a shell's `$?` shows for a normal exit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal that terminated the process, for `exit` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<i32>,
    /// True when the backend could not read all details (e.g. the process exited before /proc was read).
    #[serde(default, skip_serializing_if = "is_false")]
    pub partial: bool,
    /// Start time in clock ticks since boot, as in /proc/PID/stat field 22; input of the guid.
    #[serde(skip)]
    pub start_ticks: u64,
}

/// File facts (DESIGN.md §4 `file`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the names are the contract's words
pub struct FileInfo {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<u64>,
    /// SHA-256 of the file's content (64 lowercase hex digits), when a permission check computed it (exec-time
    /// hash rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Why the kernel refused the call, as the errno name (`"EACCES"`, `"EPERM"`, ...), for a failed attempt
    /// reported by the file syscall tracepoints (`file/ebpf`); absent when the call succeeded. The event's `action`
    /// stays `observed`: the kernel refused, not ringwatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// DNS facts inside [`NetworkInfo`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the names are the contract's words
pub struct DnsInfo {
    pub query: String,
    #[serde(default)]
    pub answers: Vec<String>,
}

/// Network facts (DESIGN.md §4 `network`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the names are the contract's words
pub struct NetworkInfo {
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsInfo>,
    /// The name the process resolved this destination from, when a DNS answer seen earlier by the same backend
    /// gave this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_name: Option<String>,
    /// The destination the process asked for, when a redirect rule sent the connection to the local proxy
    /// (`ip:port`, IPv6 in brackets); `dst_ip`/`dst_port` then name the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_dst: Option<String>,
    /// The HTTP `Host` header the proxy saw on a plain HTTP connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpInfo>,
    /// The TLS facts the proxy saw in the ClientHello.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsInfo>,
    /// How long the connection lasted, for `close` events (microseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// Why the kernel refused the connect or send, for failed attempts (`ECONNREFUSED`, `ETIMEDOUT`, `EPERM`
    /// from a firewall, ...); absent when it succeeded. The event's `action` stays `observed` unless ringwatch
    /// itself refused it (`blocked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// HTTP facts inside [`NetworkInfo`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpInfo {
    /// The `Host` header (without port), as sent by the client.
    pub host: String,
}

/// TLS facts inside [`NetworkInfo`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsInfo {
    /// The server name indication of the ClientHello.
    pub sni: String,
}

/// The X11 window that had the input focus, inside [`KeystrokeInfo`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowInfo {
    /// `_NET_WM_NAME` (or `WM_NAME`).
    #[serde(default)]
    pub title: String,
    /// The class part of `WM_CLASS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// `_NET_WM_PID`, when the client set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// Keystroke facts (DESIGN.md §4 `keystroke`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the names are the contract's words
pub struct KeystrokeInfo {
    /// The input, one line (up to Enter) or what was typed before an idle flush; empty when redacted. Control
    /// keys are written as `<BS>`, `<TAB>`, `<ESC>`, `^C`, ... so the text is printable.
    #[serde(default)]
    pub text: String,
    /// How many keys (bytes of terminal input, key presses on X11) the event stands for; for redacted input the
    /// only thing known about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u32>,
    /// True when the input was read with echo off (a password prompt) and dropped in the kernel.
    #[serde(default)]
    pub redacted: bool,
    /// The terminal, e.g. `pts/3` or `tty1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<String>,
    /// The focused window, for X11 input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowInfo>,
    /// The ssh client address (`ip:port`) of the session, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// The sensor's own health report (domain `sensor`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SensorInfo {
    /// Human-readable summary.
    pub message: String,
    /// The component concerned, e.g. `process/kernel` or `pipeline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// How many (events dropped, records malformed, ...) since the previous report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// One event, as written to every sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique, stable id of this event (see [`crate::event_id`]): assigned once by the pipeline, kept by every sink,
    /// and used as the message id when forwarding so a resent event is stored once.
    #[serde(default)]
    pub id: String,
    /// When it happened (wall clock, UTC).
    pub time: Timestamp,
    /// Host name of the sensor.
    #[serde(default)]
    pub host: String,
    /// Which domain.
    pub domain: Domain,
    /// What happened.
    pub activity: Activity,
    /// OCSF class id, derived from domain and activity.
    pub class_uid: u32,
    /// Which backend saw it.
    pub backend: Backend,
    /// The acting process with its context.
    pub process: Process,
    /// File facts, for file events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileInfo>,
    /// Network facts, for network events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkInfo>,
    /// Keystroke facts, for keystroke events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keystroke: Option<KeystrokeInfo>,
    /// Sensor health facts, for sensor events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensor: Option<SensorInfo>,
    /// What the sensor did.
    #[serde(default)]
    pub action: Action,
    /// Id of the matching policy or Sigma rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// For enforcement done from user space after the fact: microseconds between the event and the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement_delay_us: Option<u64>,
    /// False for facts reported by in-process hooks, which the process itself could forge.
    pub trusted: bool,
}

impl Event {
    /// A new event of `domain`/`activity` from `backend`, stamped now; `trusted` is true except for preload hooks.
    pub fn new(domain: Domain, activity: Activity, backend: Backend) -> Self {
        Event {
            id: String::new(),
            time: Timestamp::now(),
            host: String::new(),
            domain,
            activity,
            class_uid: class_uid_of(domain, activity),
            backend,
            process: Process::default(),
            file: None,
            network: None,
            keystroke: None,
            sensor: None,
            action: Action::Observed,
            rule: None,
            enforcement_delay_us: None,
            trusted: backend.source != SourceKind::Preload,
        }
    }

    /// A `sensor` event about the agent itself.
    pub fn sensor(activity: Activity, component: &str, message: impl Into<String>, count: Option<u64>) -> Self {
        let mut ev = Event::new(Domain::Sensor, activity, Backend { mode: Mode::User, source: SourceKind::Agent });
        ev.process.pid = std::process::id();
        ev.sensor = Some(SensorInfo { message: message.into(), component: Some(component.to_owned()), count });
        ev
    }
}

/// OCSF class of an event.
pub fn class_uid_of(domain: Domain, activity: Activity) -> u32 {
    match (domain, activity) {
        (Domain::Network, Activity::Dns) => class_uid::DNS,
        (Domain::Network, _) => class_uid::NETWORK,
        (Domain::Process, _) => class_uid::PROCESS,
        (Domain::File, _) => class_uid::FILE,
        (Domain::Keystroke, _) => class_uid::KEYSTROKE,
        (Domain::Sensor, _) => class_uid::SENSOR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the `time` crate's formatter writes, the reference for the hand-placed digits.
    fn reference(t: Timestamp) -> String {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.0))
            .expect("u64 nanoseconds are in range")
            .format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
            ))
            .expect("formats")
    }

    #[test]
    fn rfc3339_matches_the_time_crate_and_round_trips() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let samples = (0..20_000).map(|_| {
            // xorshift: spread over the whole u64 range, plus the edges below.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        });
        let edges = [0, 1, 999_999_999, 1_000_000_000, 951_782_400_000_000_000, 1_795_651_200_123_456_789, u64::MAX];
        for t in samples.chain(edges).map(Timestamp) {
            let text = t.to_rfc3339();
            assert_eq!(text, reference(t), "{}", t.0);
            assert_eq!(text.len(), RFC3339_LEN);
            assert_eq!(Timestamp::parse_rfc3339(&text), Some(t));
        }
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(Timestamp(951_782_400_000_000_007).to_rfc3339(), "2000-02-29T00:00:00.000000007Z");
    }
}
