//! A server's address as the command line writes it: `HOST`, `HOST:PORT`,
//! `[IPV6]:PORT`, `[IPV6]`, or a bare IPv6 address, and the default port.

use std::net::Ipv6Addr;

/// The port a server listens on, and a client connects to, when none is
/// given (issue 16).
pub const DEFAULT_PORT: u16 = 7740;

/// A host, and the port if the address named one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// A name, an IPv4 address or an IPv6 address without brackets.
    pub host: String,
    pub port: Option<u16>,
}

/// Why an address could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("no host given")]
    Empty,
    #[error("`{0}` has no host before its ':PORT'")]
    NoHost(String),
    #[error("`{0}` has a '[' with no ']' to close it")]
    Unclosed(String),
    #[error("`{0}`: only ':PORT' may follow the ']' of an IPv6 address")]
    AfterBracket(String),
    #[error("`{0}`: brackets hold an IPv6 address, and this is none")]
    NotIpv6(String),
    #[error("`{0}` is neither HOST:PORT nor an IPv6 address; write an IPv6 address with a port as [ADDR]:PORT")]
    Colons(String),
    #[error("port given twice: `{0}` has one, and {1} follows it")]
    PortTwice(String, u16),
    #[error("`{address}`: {problem}")]
    BadPort { address: String, problem: PortError },
}

/// Why a port could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("no port after the ':'")]
    Missing,
    #[error("port `{0}` is not a number")]
    NotANumber(String),
    #[error("port `{0}` is not between 1 and 65535")]
    OutOfRange(String),
}

/// Reads `text` as a server's address. Brackets are taken off an IPv6
/// address; a bare one (`::1`) is a host with no port, since its last
/// group cannot be told from a port.
pub fn parse_address(text: &str) -> Result<Address, AddressError> {
    if text.is_empty() {
        return Err(AddressError::Empty);
    }
    if let Some(inside) = text.strip_prefix('[') {
        let (host, after) = inside
            .split_once(']')
            .ok_or_else(|| AddressError::Unclosed(text.to_owned()))?;
        if !is_ipv6(host) {
            return Err(AddressError::NotIpv6(text.to_owned()));
        }
        let port = match after {
            "" => None,
            _ => {
                let digits = after
                    .strip_prefix(':')
                    .ok_or_else(|| AddressError::AfterBracket(text.to_owned()))?;
                Some(port_in(text, digits)?)
            }
        };
        return Ok(Address {
            host: host.to_owned(),
            port,
        });
    }
    match text.matches(':').count() {
        0 => Ok(Address {
            host: text.to_owned(),
            port: None,
        }),
        1 => {
            let (host, digits) = text.split_once(':').unwrap_or((text, ""));
            if host.is_empty() {
                return Err(AddressError::NoHost(text.to_owned()));
            }
            Ok(Address {
                host: host.to_owned(),
                port: Some(port_in(text, digits)?),
            })
        }
        _ if is_ipv6(text) => Ok(Address {
            host: text.to_owned(),
            port: None,
        }),
        _ => Err(AddressError::Colons(text.to_owned())),
    }
}

/// The client's `HOST [PORT]` operands as one address: the port may come
/// in HOST or after it, not both.
pub fn client_address(host: &str, port: Option<u16>) -> Result<Address, AddressError> {
    let address = parse_address(host)?;
    match (address.port, port) {
        (Some(_), Some(second)) => Err(AddressError::PortTwice(host.to_owned(), second)),
        (None, Some(port)) => Ok(Address {
            port: Some(port),
            ..address
        }),
        (_, None) => Ok(address),
    }
}

/// Reads a port: digits only, 1 to 65535 (a client cannot reach port 0).
pub fn parse_port(digits: &str) -> Result<u16, PortError> {
    if digits.is_empty() {
        return Err(PortError::Missing);
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortError::NotANumber(digits.to_owned()));
    }
    match digits.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(PortError::OutOfRange(digits.to_owned())),
    }
}

/// Whether a positional argument is a port rather than a request: a port
/// is all digits, and no request's name holds one.
pub fn is_port_like(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit())
}

fn port_in(address: &str, digits: &str) -> Result<u16, AddressError> {
    parse_port(digits).map_err(|problem| AddressError::BadPort {
        address: address.to_owned(),
        problem,
    })
}

/// An IPv6 address, with a zone (`fe80::1%eth0`) allowed, as the
/// resolver takes it.
fn is_ipv6(text: &str) -> bool {
    let address = text
        .split_once('%')
        .map_or(text, |(address, _zone)| address);
    address.parse::<Ipv6Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(host: &str, port: Option<u16>) -> Result<Address, AddressError> {
        Ok(Address {
            host: host.to_owned(),
            port,
        })
    }

    #[test]
    fn addresses_are_read_into_host_and_port() {
        let cases = [
            ("example.com", address("example.com", None)),
            ("example.com:9000", address("example.com", Some(9000))),
            ("10.0.0.1:1", address("10.0.0.1", Some(1))),
            ("10.0.0.1", address("10.0.0.1", None)),
            ("[::1]:9107", address("::1", Some(9107))),
            ("[::1]", address("::1", None)),
            ("[fe80::1%eth0]:80", address("fe80::1%eth0", Some(80))),
            ("::1", address("::1", None)),
            ("2001:db8::7", address("2001:db8::7", None)),
            ("nas", address("nas", None)),
            ("host:65535", address("host", Some(65535))),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_address(text), expected, "{text}");
        }
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        let cases = [
            ("", AddressError::Empty),
            (":9000", AddressError::NoHost(":9000".into())),
            ("[::1", AddressError::Unclosed("[::1".into())),
            ("[::1]9000", AddressError::AfterBracket("[::1]9000".into())),
            (
                "[example.com]:1",
                AddressError::NotIpv6("[example.com]:1".into()),
            ),
            ("a:b:c", AddressError::Colons("a:b:c".into())),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_address(text), Err(expected), "{text}");
        }
        let bad_ports = [
            ("host:", PortError::Missing),
            ("host:http", PortError::NotANumber("http".into())),
            ("host:-1", PortError::NotANumber("-1".into())),
            ("host:+1", PortError::NotANumber("+1".into())),
            ("host:0", PortError::OutOfRange("0".into())),
            ("host:65536", PortError::OutOfRange("65536".into())),
            ("[::1]:", PortError::Missing),
            (
                "[::1]:99999999999",
                PortError::OutOfRange("99999999999".into()),
            ),
        ];
        for (text, problem) in bad_ports {
            assert_eq!(
                parse_address(text),
                Err(AddressError::BadPort {
                    address: text.into(),
                    problem
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn the_port_comes_in_the_host_or_after_it_not_both() {
        assert_eq!(client_address("h", Some(9)), address("h", Some(9)));
        assert_eq!(client_address("h:8", None), address("h", Some(8)));
        assert_eq!(client_address("[::1]", Some(9)), address("::1", Some(9)));
        assert_eq!(client_address("::1", Some(9)), address("::1", Some(9)));
        assert_eq!(client_address("h", None), address("h", None));
        assert_eq!(
            client_address("h:8", Some(9)),
            Err(AddressError::PortTwice("h:8".into(), 9))
        );
    }

    #[test]
    fn a_port_is_all_digits_and_a_request_never_is() {
        for word in ["9000", "1", "0", "99999"] {
            assert!(is_port_like(word), "{word}");
        }
        for word in ["", "list", "ls", "put", "9000x", "-1", "get"] {
            assert!(!is_port_like(word), "{word}");
        }
    }
}
