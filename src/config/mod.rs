//! ward's configuration: RON text in, a ready [`Config`] out.
//!
//! Two steps, as in rathole: serde structs that reject unknown fields and
//! default everything optional ([`raw`]), then `validate`, which checks what
//! serde cannot (addresses parse, names exist, limits make sense) and returns
//! typed values. Every error names the file, line, column and field path.
//! The shipped `config.ron` is embedded and used when no file is given.

pub mod dialers;
pub mod dns;
pub mod error;
pub mod links;
pub mod locate;
pub mod raw;
pub mod udp;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ron::extensions::Extensions;
use ward_supervision::{BackoffPolicy, Intensity};

pub use error::{ConfigError, ConfigErrors};
pub use raw::LogFormat;

use locate::Locator;
use raw::RawConfig;

/// The shipped default configuration.
pub const DEFAULT_CONFIG: &str = include_str!("../../config.ron");
/// How the embedded default is named in messages.
pub const DEFAULT_NAME: &str = "<default config.ron>";
/// Admin clients served at once, at most (each holds a task and a socket).
pub const MAX_ADMIN_CLIENTS: usize = 4096;

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it came from (a path, or [`DEFAULT_NAME`]).
    pub source: String,
    /// The user (and group) ward switches to when started as root.
    pub run_as: Option<RunAs>,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    /// The HTTP API; off when the section is absent.
    pub api: Option<ApiConfig>,
    pub supervision: SupervisionSettings,
    /// Outbound paths, groups and their health; `direct` always exists.
    pub dialers: ward_actors::dialer::settings::DialerSettings,
    /// The DNS forwarder; off when the section is absent.
    pub dns: Option<ward_actors::dns::settings::DnsSettings>,
    /// The UDP relay; off when the section is absent.
    pub udp: Option<ward_actors::udp::settings::UdpSettings>,
}

/// The unprivileged user and group of `user` and `group`, looked up when
/// the config was loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    /// `group`'s, or the user's primary group.
    pub group: String,
    pub gid: u32,
}

#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// The Unix socket `ward ctl` talks to.
    pub socket: PathBuf,
    /// A group that may use the socket too (mode 0660 instead of 0600).
    pub group: Option<AdminGroup>,
    /// Admin clients served at once.
    pub max_clients: usize,
}

#[derive(Clone, Debug)]
pub struct AdminGroup {
    pub name: String,
    pub gid: u32,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A tracing filter (`info`, `ward=debug,info`); `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
    /// Write to this file, rotated daily, instead of stderr.
    pub file: Option<PathBuf>,
    /// Window of the repeated-event throttle.
    pub throttle_window: Duration,
}

#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// Where `/metrics` is served; off when `None`.
    pub listen: Option<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    /// Where the API is served.
    pub listen: SocketAddr,
    /// The bearer token every request must carry; none: open.
    pub secret: Option<ward_actors::dialer::settings::Secret>,
    /// The file the groups' picks are kept in (see `api::picks`).
    pub state: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug)]
pub struct SupervisionSettings {
    pub intensity: Intensity,
    pub backoff: BackoffPolicy,
}

impl Config {
    /// The embedded default configuration.
    pub fn default_config() -> Result<Config, ConfigErrors> {
        parse(DEFAULT_CONFIG, DEFAULT_NAME)
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: name.clone(),
                line: 0,
                col: 0,
                path: String::new(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        parse_at(&text, &name, base)
    }

    /// The file if given, else the embedded default.
    pub fn load_or_default(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        match path {
            Some(path) => Self::load(path),
            None => Self::default_config(),
        }
    }
}

/// Parses and validates RON text; `file` names it in errors. Relative
/// file paths in it are taken from the working directory.
pub fn parse(src: &str, file: &str) -> Result<Config, ConfigErrors> {
    parse_at(src, file, Path::new("."))
}

/// [`parse`], with relative file paths taken from `base` (the directory
/// of the config file).
pub fn parse_at(src: &str, file: &str, base: &Path) -> Result<Config, ConfigErrors> {
    let raw = deserialize(src, file)?;
    let mut checker = Checker {
        file,
        base,
        locator: Locator::new(src),
        errors: Vec::new(),
    };
    let config = checker.config(raw, file);
    if checker.errors.is_empty() {
        Ok(config)
    } else {
        checker.errors.sort_by_key(|e| (e.line, e.col));
        Err(ConfigErrors(checker.errors))
    }
}

fn deserialize(src: &str, file: &str) -> Result<RawConfig, ConfigErrors> {
    let options = ron::Options::default().with_default_extension(Extensions::IMPLICIT_SOME);
    let spanned = |err: ron::error::SpannedError, path: String| {
        let (line, col) = skip_blanks(src, err.span.start.line, err.span.start.col);
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line,
            col,
            path,
            message: err.code.to_string(),
        }])
    };
    let mut de = ron::Deserializer::from_str_with_options(src, &options)
        .map_err(|e| spanned(e, String::new()))?;
    let raw = serde_path_to_error::deserialize::<_, RawConfig>(&mut de).map_err(|e| {
        let path = field_path(e.path());
        spanned(de.span_error(e.into_inner()), path)
    })?;
    de.end()
        .map_err(|e| spanned(de.span_error(e), String::new()))?;
    Ok(raw)
}

/// ron may point at the blanks before the offending value; move to the value.
fn skip_blanks(src: &str, line: usize, col: usize) -> (usize, usize) {
    let Some(text) = src.lines().nth(line.saturating_sub(1)) else {
        return (line, col);
    };
    let skipped = text
        .chars()
        .skip(col.saturating_sub(1))
        .take_while(|c| *c == ' ' || *c == '\t')
        .count();
    if col - 1 + skipped < text.chars().count() {
        (line, col + skipped)
    } else {
        (line, col)
    }
}

/// `dns.upstreams.knot.url`, `dns.listen[1]`; enum variant names are left out.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => push_field(&mut out, key),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

fn push_field(out: &mut String, name: &str) {
    if !out.is_empty() {
        out.push('.');
    }
    out.push_str(name);
}

/// Collects semantic errors with their positions.
struct Checker<'a> {
    file: &'a str,
    /// Where relative file paths start.
    base: &'a Path,
    locator: Locator,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    pub(crate) fn error(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.locator.find(path);
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line: pos.line,
            col: pos.col,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// A file path from the config: relative ones start at the config's
    /// directory, so a daemon's working directory does not matter.
    pub(crate) fn file_path(&self, text: &str) -> PathBuf {
        self.base.join(text)
    }

    fn config(&mut self, raw: RawConfig, source: &str) -> Config {
        let dialers = self.dialer_settings(raw.dialers, raw.groups, raw.health);
        let raw_udp = raw.udp;
        let run_as = self.run_as(raw.user, raw.group);
        let mut config = Config {
            source: source.to_string(),
            admin: self.admin(raw.admin, run_as.is_some()),
            run_as,
            log: self.log(raw.log),
            metrics: self.metrics(raw.metrics),
            api: raw.api.and_then(|api| self.api(api)),
            supervision: self.supervision(raw.supervision),
            dns: raw.dns.map(|dns| self.dns(dns, &dialers)),
            udp: None,
            dialers,
        };
        let dns_listen = config.dns.as_ref().map_or(Vec::new(), |d| d.listen.clone());
        config.udp = raw_udp.map(|udp| self.udp(udp, &config.dialers, &dns_listen));
        config
    }

    /// `user` and `group`: names that exist here, and not root's.
    fn run_as(&mut self, user: Option<String>, group: Option<String>) -> Option<RunAs> {
        let group = group.map(|name| {
            let gid = match nix::unistd::Group::from_name(&name) {
                Ok(Some(found)) => Some(found.gid.as_raw()),
                _ => {
                    self.error("group", format!("no group named {name:?}"));
                    None
                }
            };
            (name, gid)
        });
        let Some(user) = user else {
            if group.is_some() {
                self.error("group", "is set without user: set user too");
            }
            return None;
        };
        let found = match nix::unistd::User::from_name(&user) {
            Ok(Some(found)) if found.uid.is_root() => {
                self.error(
                    "user",
                    format!("{user:?} is root: leave user unset to run as root"),
                );
                return None;
            }
            Ok(Some(found)) => found,
            _ => {
                self.error("user", format!("no user named {user:?}"));
                return None;
            }
        };
        let (group, gid) = match group {
            Some((name, gid)) => (name, gid?),
            None => {
                let gid = found.gid.as_raw();
                let name = nix::unistd::Group::from_gid(found.gid)
                    .ok()
                    .flatten()
                    .map_or_else(|| gid.to_string(), |g| g.name);
                (name, gid)
            }
        };
        Some(RunAs {
            user,
            uid: found.uid.as_raw(),
            group,
            gid,
        })
    }

    /// `switching`: ward starts as root and switches to `user`, so its
    /// default socket is root's, wherever `ward ctl` runs.
    fn admin(&mut self, raw: raw::RawAdmin, switching: bool) -> AdminConfig {
        let socket = match raw.socket {
            Some(path) if !Path::new(&path).is_absolute() => {
                self.error("admin.socket", format!("{path:?} is not an absolute path"));
                PathBuf::from(path)
            }
            Some(path) => PathBuf::from(path),
            None if switching => PathBuf::from(ROOT_ADMIN_SOCKET),
            None => default_admin_socket(),
        };
        let group = raw
            .group
            .and_then(|name| match nix::unistd::Group::from_name(&name) {
                Ok(Some(group)) => Some(AdminGroup {
                    name,
                    gid: group.gid.as_raw(),
                }),
                _ => {
                    self.error("admin.group", format!("no group named {name:?}"));
                    None
                }
            });
        if raw.max_clients == 0 {
            self.error("admin.max_clients", "must be at least 1");
        } else if raw.max_clients > MAX_ADMIN_CLIENTS {
            self.error(
                "admin.max_clients",
                format!(
                    "{} is above the limit of {MAX_ADMIN_CLIENTS}",
                    raw.max_clients
                ),
            );
        }
        AdminConfig {
            socket,
            group,
            max_clients: raw.max_clients.clamp(1, MAX_ADMIN_CLIENTS),
        }
    }

    fn log(&mut self, raw: raw::RawLog) -> LogConfig {
        if let Err(e) = crate::telemetry::logging::parse(&raw.level) {
            self.error("log.level", format!("not a valid log filter: {e}"));
        }
        if raw.throttle_window_s == 0 {
            self.error("log.throttle_window_s", "must be at least 1");
        }
        let file = raw.file.map(PathBuf::from);
        if let Some(file) = &file {
            if file.file_name().is_none() {
                self.error(
                    "log.file",
                    format!("{} does not name a file", file.display()),
                );
            }
        }
        LogConfig {
            level: raw.level,
            format: raw.format,
            file,
            throttle_window: Duration::from_secs(raw.throttle_window_s.max(1)),
        }
    }

    fn metrics(&mut self, raw: raw::RawMetrics) -> MetricsConfig {
        let listen = raw
            .listen
            .and_then(|text| self.socket_addr("metrics.listen", &text));
        MetricsConfig { listen }
    }

    /// `api`: an address that parses; one others can reach only with a
    /// secret (the API can switch paths, kill actors and reload).
    fn api(&mut self, raw: raw::RawApi) -> Option<ApiConfig> {
        let listen = self.socket_addr("api.listen", &raw.listen)?;
        let secret = raw.secret.map(|s| s.0).filter(|s| !s.is_empty());
        if !listen.ip().is_loopback() && secret.is_none() {
            self.error(
                "api.listen",
                format!("{listen} is not a loopback address: set api.secret, or listen on 127.0.0.1 or [::1]"),
            );
        }
        Some(ApiConfig {
            listen,
            secret: secret.map(ward_actors::dialer::settings::Secret::new),
            state: raw.state.map(|state| self.file_path(&state)),
        })
    }

    pub(crate) fn socket_addr(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    path,
                    format!("{text:?} is not an IP address with a port, like \"127.0.0.1:53\" or \"[::1]:53\""),
                );
                None
            }
        }
    }

    fn supervision(&mut self, raw: raw::RawSupervision) -> SupervisionSettings {
        if raw.max_restarts == 0 {
            self.error("supervision.max_restarts", "must be at least 1");
        }
        if raw.within_s == 0 {
            self.error("supervision.within_s", "must be at least 1");
        }
        if raw.backoff_min_ms > raw.backoff_max_ms {
            self.error(
                "supervision.backoff_min_ms",
                format!(
                    "{} is above backoff_max_ms ({})",
                    raw.backoff_min_ms, raw.backoff_max_ms
                ),
            );
        }
        SupervisionSettings {
            intensity: Intensity {
                max_restarts: raw.max_restarts.max(1),
                within: Duration::from_secs(raw.within_s.max(1)),
            },
            backoff: BackoffPolicy {
                min: Duration::from_millis(raw.backoff_min_ms),
                max: Duration::from_millis(raw.backoff_max_ms),
                reset_after: Duration::from_secs(raw.backoff_reset_s),
                jitter: BackoffPolicy::default().jitter,
            },
        }
    }
}

/// The default admin socket of a ward started as root.
pub const ROOT_ADMIN_SOCKET: &str = "/run/ward/admin.sock";

/// `admin.sock` in `$RUNTIME_DIRECTORY` when systemd set one up
/// (`RuntimeDirectory=ward`: `/run/ward`, whoever ward runs as, and its
/// `ExecReload=ward ctl ...` gets the same); otherwise
/// [`ROOT_ADMIN_SOCKET`] as root, `$XDG_RUNTIME_DIR/ward/admin.sock`, or
/// `/tmp/ward-<uid>/admin.sock` when that is unset. (A config with `user`
/// always defaults to [`ROOT_ADMIN_SOCKET`], so `ward ctl` as that user
/// finds it.)
pub fn default_admin_socket() -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let runtime = std::env::var_os("RUNTIME_DIRECTORY").unwrap_or_default();
    // Several directories are separated by colons; the first is ward's.
    let first = runtime.as_bytes().split(|b| *b == b':').next();
    if let Some(dir) = first.filter(|dir| dir.starts_with(b"/")) {
        return Path::new(std::ffi::OsStr::from_bytes(dir)).join("admin.sock");
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from(ROOT_ADMIN_SOCKET);
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("ward").join("admin.sock"),
        None => PathBuf::from(format!("/tmp/ward-{}", nix::unistd::geteuid())).join("admin.sock"),
    }
}
