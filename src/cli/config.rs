//! The config file, `config.toml` in ferry's configuration directory or
//! `--config FILE`: named servers for the client (`[servers.NAME]`) and
//! defaults for the server (`[server]`). The command line wins over it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytesize::ByteSize;
use clap::parser::ValueSource;
use clap::ArgMatches;
use ferry::security::Fingerprint;
use ferry::store::s3::S3Spec;
use serde::{Deserialize, Deserializer};

use super::address::{parse_address, parse_port, Address, DEFAULT_PORT};
use super::{ClientArgs, ClientOptions, ServerArgs};

/// How long the client waits when neither the command line nor the config
/// file says.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The config file's name in ferry's configuration directory.
const FILE_NAME: &str = "config.toml";

/// What a config file holds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    /// Servers the client knows by name.
    #[serde(default)]
    pub servers: BTreeMap<String, NamedServer>,
    /// Defaults for `ferry server`.
    #[serde(default)]
    pub server: ServerDefaults,
}

/// A `[servers.NAME]` table: how to reach and trust one server.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NamedServer {
    /// The host to connect to [default: the name itself].
    #[serde(default, deserialize_with = "host_only")]
    pub host: Option<String>,
    #[serde(default, deserialize_with = "client_port")]
    pub port: Option<u16>,
    #[serde(default, deserialize_with = "fingerprint")]
    pub fingerprint: Option<Fingerprint>,
    pub token_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub plain: Option<toml::Spanned<bool>>,
    #[serde(default, deserialize_with = "timeout")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "rate")]
    pub limit_rate: Option<u64>,
}

/// The `[server]` table: defaults for `ferry server`'s options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerDefaults {
    pub port: Option<u16>,
    pub root: Option<PathBuf>,
    pub store: Option<toml::Spanned<S3Address>>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub bind: Option<IpAddr>,
    pub token_file: Option<PathBuf>,
    pub identity: Option<PathBuf>,
    pub mode: Option<ModeName>,
    pub plain: Option<toml::Spanned<bool>>,
    #[serde(default, deserialize_with = "at_least_one")]
    pub max_connections: Option<u64>,
    #[serde(default, deserialize_with = "at_least_one")]
    pub max_per_ip: Option<u64>,
    #[serde(default, deserialize_with = "size")]
    pub max_file_size: Option<ByteSize>,
    #[serde(default, deserialize_with = "at_least_one")]
    pub header_timeout: Option<u64>,
    #[serde(default, deserialize_with = "at_least_one")]
    pub idle_timeout: Option<u64>,
    #[serde(default, deserialize_with = "at_least_one")]
    pub stall_timeout: Option<u64>,
    #[serde(default, deserialize_with = "at_least_one")]
    pub partial_ttl: Option<u64>,
    #[serde(default, deserialize_with = "rate")]
    pub limit_rate: Option<u64>,
}

/// A `store` key: an `s3://BUCKET[/PREFIX]` address, checked as the
/// command line checks `--store`.
#[derive(Debug, Clone)]
pub struct S3Address(pub S3Spec);

impl<'de> Deserialize<'de> for S3Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        S3Spec::parse(&text)
            .map(S3Address)
            .map_err(serde::de::Error::custom)
    }
}

/// A server mode as the config file spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeName {
    ReadOnly,
    NoDelete,
    UploadOnly,
}

/// Reads the config file: `explicit` if given (it must exist), else the
/// default one, whose absence means an empty config.
pub fn load(explicit: Option<&Path>) -> anyhow::Result<ConfigFile> {
    let path = match explicit {
        Some(path) => path.to_owned(),
        None => match ferry::security::config_dir() {
            Some(dir) => dir.join(FILE_NAME),
            None => return Ok(ConfigFile::default()),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            return Ok(ConfigFile::default())
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read config file {}", path.display()))
        }
    };
    parse(&text, &path)
}

/// Reads `text`, the content of the config file at `path`; errors read
/// `FILE:LINE: message`. Relative paths in it are taken from the file's
/// directory, and `~/` from the home directory.
fn parse(text: &str, path: &Path) -> anyhow::Result<ConfigFile> {
    let at_line = |offset: usize, message: &str| {
        let line = line_of(text, offset);
        anyhow::anyhow!("{}:{line}: {message}", path.display())
    };
    let mut config: ConfigFile = toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => at_line(span.start, e.message().trim_end()),
        None => anyhow::anyhow!("{}: {}", path.display(), e.message().trim_end()),
    })?;
    for (name, server) in &config.servers {
        if let Some(plain) = server.plain.as_ref().filter(|plain| *plain.get_ref()) {
            if server.fingerprint.is_some() || server.known_hosts.is_some() {
                return Err(at_line(
                    plain.span().start,
                    &format!(
                        "[servers.{name}]: plain = true cannot go with fingerprint or known-hosts"
                    ),
                ));
            }
        }
    }
    if let Some(plain) = config
        .server
        .plain
        .as_ref()
        .filter(|plain| *plain.get_ref())
    {
        if config.server.identity.is_some() {
            return Err(at_line(
                plain.span().start,
                "[server]: plain = true cannot go with identity",
            ));
        }
    }
    if let (Some(store), Some(_)) = (&config.server.store, &config.server.root) {
        return Err(at_line(
            store.span().start,
            "[server]: store cannot go with root; a server serves one or the other",
        ));
    }
    let base = path.parent().unwrap_or(Path::new(""));
    for server in config.servers.values_mut() {
        for file in [&mut server.token_file, &mut server.known_hosts] {
            resolve(file, base);
        }
    }
    let defaults = &mut config.server;
    for file in [
        &mut defaults.root,
        &mut defaults.token_file,
        &mut defaults.identity,
    ] {
        resolve(file, base);
    }
    Ok(config)
}

/// Makes a path from the config file usable from anywhere.
fn resolve(path: &mut Option<PathBuf>, base: &Path) {
    let Some(given) = path.take() else { return };
    let home = dirs::home_dir();
    *path = Some(match (given.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => base.join(given),
    });
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let before = text.get(..offset).unwrap_or(text);
    before.matches('\n').count() + 1
}

impl ConfigFile {
    /// The client's options: its flags, then what the server named
    /// `address.host` has in this file (a name here wins over DNS), then
    /// the defaults. Trust is one choice: any of --plain, --fingerprint or
    /// --known-hosts replaces all of the file's.
    pub fn client_options(&self, args: &ClientArgs, address: Address) -> ClientOptions {
        let named = self.servers.get(&address.host);
        let empty = NamedServer::default();
        let named_or_empty = named.unwrap_or(&empty);
        let host = match named.and_then(|server| server.host.clone()) {
            Some(host) => host,
            None => address.host,
        };
        let trust_given = args.plain || args.fingerprint.is_some() || args.known_hosts.is_some();
        let trust = if trust_given { &empty } else { named_or_empty };
        ClientOptions {
            host,
            port: address.port.or(named_or_empty.port).unwrap_or(DEFAULT_PORT),
            timeout: args
                .timeout
                .or(named_or_empty.timeout)
                .unwrap_or(DEFAULT_TIMEOUT),
            plain: args.plain || trust.plain.as_ref().is_some_and(|plain| *plain.get_ref()),
            fingerprint: args.fingerprint.or(trust.fingerprint),
            known_hosts: args
                .known_hosts
                .clone()
                .or_else(|| trust.known_hosts.clone()),
            token_file: args
                .token_file
                .clone()
                .or_else(|| named_or_empty.token_file.clone()),
            rate_limit: args.limit_rate.or(named_or_empty.limit_rate).unwrap_or(0),
        }
    }
}

impl ServerDefaults {
    /// Fills each option of `args` not given on the command line
    /// (`matches` tells which were) from these defaults.
    pub fn apply(&self, args: &mut ServerArgs, matches: Option<&ArgMatches>) {
        let given = |id: &str| {
            matches.is_some_and(|m| m.value_source(id) == Some(ValueSource::CommandLine))
        };
        let ServerDefaults {
            port,
            root,
            store,
            s3_endpoint,
            s3_region,
            bind,
            token_file,
            identity,
            mode,
            plain,
            max_connections,
            max_per_ip,
            max_file_size,
            header_timeout,
            idle_timeout,
            stall_timeout,
            partial_ttl,
            limit_rate,
        } = self;
        args.port = args.port.or(*port);
        args.bind = args.bind.or(*bind);
        args.token_file = args.token_file.take().or_else(|| token_file.clone());
        args.max_file_size = args.max_file_size.or(*max_file_size);
        // Where the files are is one choice: --root or --store on the
        // command line replaces the file's root or store whole.
        if !given("root") && args.store.is_none() {
            fill(&mut args.root, root.clone(), false);
            args.store = store.as_ref().map(|store| store.get_ref().0.clone());
        }
        if args.store.is_some() {
            args.s3_endpoint = args.s3_endpoint.take().or_else(|| s3_endpoint.clone());
            args.s3_region = args.s3_region.take().or_else(|| s3_region.clone());
        }
        fill(
            &mut args.max_connections,
            *max_connections,
            given("max_connections"),
        );
        fill(&mut args.max_per_ip, *max_per_ip, given("max_per_ip"));
        fill(
            &mut args.header_timeout,
            *header_timeout,
            given("header_timeout"),
        );
        fill(&mut args.idle_timeout, *idle_timeout, given("idle_timeout"));
        fill(
            &mut args.stall_timeout,
            *stall_timeout,
            given("stall_timeout"),
        );
        fill(&mut args.partial_ttl, *partial_ttl, given("partial_ttl"));
        fill(&mut args.limit_rate, *limit_rate, given("limit_rate"));
        // Encryption and mode are each one choice: any flag for it on the
        // command line replaces the file's choice whole.
        if !args.plain && args.identity.is_none() {
            args.plain = plain.as_ref().is_some_and(|plain| *plain.get_ref());
            args.identity = identity.clone();
        }
        if !(args.read_only || args.no_delete || args.upload_only) {
            match mode {
                Some(ModeName::ReadOnly) => args.read_only = true,
                Some(ModeName::NoDelete) => args.no_delete = true,
                Some(ModeName::UploadOnly) => args.upload_only = true,
                None => {}
            }
        }
    }
}

/// Sets `option` to `default` unless the command line gave it.
fn fill<T>(option: &mut T, default: Option<T>, given: bool) {
    if let (Some(default), false) = (default, given) {
        *option = default;
    }
}

/// A `host` key: a name or an address, without a port (that is `port`).
fn host_only<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    match parse_address(&text) {
        Ok(Address { host, port: None }) => Ok(Some(host)),
        Ok(Address { port: Some(_), .. }) => Err(serde::de::Error::custom(
            "host holds no port; give it as port = N",
        )),
        Err(e) => Err(serde::de::Error::custom(e)),
    }
}

fn client_port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    let number = i64::deserialize(deserializer)?;
    parse_port(&number.to_string())
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn fingerprint<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Fingerprint>, D::Error> {
    let text = String::deserialize(deserializer)?;
    Fingerprint::parse(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Seconds, whole or not, as `--timeout` takes them.
fn timeout<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Seconds {
        Whole(i64),
        Fraction(f64),
    }
    let text = match Seconds::deserialize(deserializer)? {
        Seconds::Whole(n) => n.to_string(),
        Seconds::Fraction(x) => x.to_string(),
    };
    super::parse_timeout(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("timeout {e}")))
}

fn at_least_one<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let number = i64::deserialize(deserializer)?;
    match u64::try_from(number) {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(serde::de::Error::custom(format!(
            "{number} is not a whole number of at least 1"
        ))),
    }
}

/// A rate in bytes a second, or with a unit as `--limit-rate` takes it:
/// "10M"; 0 for no limit.
fn rate<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Rate {
        Bytes(u64),
        Text(String),
    }
    match Rate::deserialize(deserializer)? {
        Rate::Bytes(n) => Ok(Some(n)),
        Rate::Text(text) => super::parse_rate(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("limit-rate `{text}`: {e}"))),
    }
}

/// A size in bytes, or with a unit as the command line takes it: "500M".
fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<ByteSize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(n) => Ok(Some(ByteSize::b(n))),
        Size::Text(text) => text
            .parse::<ByteSize>()
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("size `{text}`: {e}"))),
    }
}

// The binary denies these for code that runs; a test fails by panicking.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> anyhow::Result<ConfigFile> {
        parse(text, Path::new("/etc/ferry.toml"))
    }

    fn error_of(text: &str) -> String {
        format!("{:#}", parsed(text).unwrap_err())
    }

    #[test]
    fn named_servers_and_server_defaults_are_read() {
        let fingerprint = Fingerprint::of_certificate(b"nas");
        let config = parsed(&format!(
            "[servers.nas]\nhost = \"[::1]\"\nport = 9000\nfingerprint = \"{fingerprint}\"\n\
             token-file = \"nas.token\"\ntimeout = 2.5\n\n\
             [servers.lan]\nplain = true\n\n\
             [server]\nport = 0\nmode = \"no-delete\"\nmax-file-size = \"2GiB\"\npartial-ttl = 48\n"
        ))
        .unwrap();
        let nas = &config.servers["nas"];
        assert_eq!(nas.host.as_deref(), Some("::1"));
        assert_eq!(nas.port, Some(9000));
        assert_eq!(nas.fingerprint, Some(fingerprint));
        assert_eq!(nas.token_file, Some(PathBuf::from("/etc/nas.token")));
        assert_eq!(nas.timeout, Some(Duration::from_millis(2500)));
        let lan = &config.servers["lan"];
        assert_eq!((lan.host.as_deref(), lan.port), (None, None));
        assert!(lan.plain.as_ref().is_some_and(|plain| *plain.get_ref()));
        assert_eq!(config.server.port, Some(0));
        assert_eq!(config.server.mode, Some(ModeName::NoDelete));
        assert_eq!(config.server.max_file_size, Some(ByteSize::gib(2)));
        assert_eq!(config.server.partial_ttl, Some(48));
    }

    #[test]
    fn mistakes_are_named_by_file_and_line() {
        let cases = [
            (
                "[servers.a]\nhots = \"x\"\n",
                "/etc/ferry.toml:2: ",
                "unknown field `hots`",
            ),
            (
                "\n[servers.a]\nport = 0\n",
                "/etc/ferry.toml:3: ",
                "not between 1 and 65535",
            ),
            (
                "[servers.a]\nport = \"http\"\n",
                "/etc/ferry.toml:2: ",
                "invalid type: string",
            ),
            (
                "[servers.a]\nhost = \"h:1\"\n",
                "/etc/ferry.toml:2: ",
                "port = N",
            ),
            (
                "[servers.a]\ntimeout = 0\n",
                "/etc/ferry.toml:2: ",
                "timeout must be more than 0",
            ),
            (
                "[servers.a]\nfingerprint = \"zz\"\n",
                "/etc/ferry.toml:2: ",
                "",
            ),
            (
                "[server]\nmode = \"rw\"\n",
                "/etc/ferry.toml:2: ",
                "unknown variant",
            ),
            (
                "[server]\nmax-connections = 0\n",
                "/etc/ferry.toml:2: ",
                "at least 1",
            ),
            (
                "[server]\nmax-file-size = \"lots\"\n",
                "/etc/ferry.toml:2: ",
                "size `lots`",
            ),
            (
                "[serve]\nport = 1\n",
                "/etc/ferry.toml:1: ",
                "unknown field `serve`",
            ),
            ("[server\n", "/etc/ferry.toml:1: ", ""),
            (
                "[servers.a]\nknown-hosts = \"k\"\nplain = true\n",
                "/etc/ferry.toml:3: ",
                "cannot go with",
            ),
        ];
        for (text, place, words) in cases {
            let error = error_of(text);
            assert!(error.starts_with(place), "{text:?}: {error}");
            assert!(error.contains(words), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_missing_config_file_given_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        let error = load(Some(&missing)).unwrap_err();
        assert!(format!("{error:#}").contains("none.toml"), "{error:#}");
    }

    fn client_args(words: &[&str]) -> ClientArgs {
        use clap::Parser;
        let line = ["ferry", "client"].iter().chain(words);
        match super::super::Cli::try_parse_from(line).unwrap().command {
            super::super::TopCommand::Client(args) => args,
            other => panic!("not a client command: {other:?}"),
        }
    }

    #[test]
    fn flags_win_over_a_named_server_and_a_trust_flag_replaces_its_trust() {
        let config = parsed(
            "[servers.box]\nhost = \"10.0.0.9\"\nport = 9000\nplain = true\n\
             timeout = 3\ntoken-file = \"t\"\n",
        )
        .unwrap();
        let options = |words: &[&str]| {
            let args = client_args(words);
            let address = super::super::address::client_address(&args.host, args.port).unwrap();
            config.client_options(&args, address)
        };

        let named = options(&["box", "list"]);
        assert_eq!((named.host.as_str(), named.port), ("10.0.0.9", 9000));
        assert!(named.plain);
        assert_eq!(named.timeout, Duration::from_secs(3));
        assert_eq!(named.token_file, Some(PathBuf::from("/etc/t")));

        let hex = "ab".repeat(32);
        let flagged = options(&["box", "8000", "--fingerprint", &hex, "--timeout", "1", "ls"]);
        assert_eq!((flagged.host.as_str(), flagged.port), ("10.0.0.9", 8000));
        assert!(!flagged.plain);
        assert!(flagged.fingerprint.is_some());
        assert_eq!(flagged.timeout, Duration::from_secs(1));

        let other = options(&["box.example", "list"]);
        assert_eq!(
            (other.host.as_str(), other.port),
            ("box.example", DEFAULT_PORT)
        );
        assert_eq!(other.timeout, DEFAULT_TIMEOUT);
        assert!(!other.plain && other.token_file.is_none());
    }

    #[test]
    fn a_server_store_is_read_and_checked() {
        let config =
            parsed("[server]\nstore = \"s3://files/team\"\ns3-endpoint = \"http://127.0.0.1:9\"\n")
                .unwrap();
        let store = &config.server.store.as_ref().unwrap().get_ref().0;
        assert_eq!(
            (store.bucket.as_str(), store.prefix.as_str()),
            ("files", "team")
        );
        assert_eq!(
            config.server.s3_endpoint.as_deref(),
            Some("http://127.0.0.1:9")
        );

        let both = error_of("[server]\nroot = \"/srv\"\n\nstore = \"s3://files\"\n");
        assert!(both.starts_with("/etc/ferry.toml:4: "), "{both}");
        assert!(both.contains("store cannot go with root"), "{both}");
        let bad = error_of("[server]\nstore = \"s3://Files\"\n");
        assert!(bad.starts_with("/etc/ferry.toml:2: "), "{bad}");
        assert!(bad.contains("not a bucket name"), "{bad}");
    }

    #[test]
    fn lines_are_counted_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }
}
