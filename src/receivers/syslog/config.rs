//! Configuration of the `syslog` receiver, with the collector's option names where its
//! syslog receiver has them (`protocol`, `location`, `tcp.listen_address`,
//! `udp.listen_address`, `non_transparent_framing_trailer`).

use super::framing::{Oversize, Trailer};
use crate::config::{duration, present_or_default, FieldError};
use crate::net::parse_address;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Which syslog format the senders use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG`).
    #[default]
    Rfc5424,
    /// RFC 3164, the BSD format (`<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`).
    Rfc3164,
}

/// What happens to a message that does not parse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Keep it as a log record whose body is the raw text, with `syslog.parse_error`.
    #[default]
    KeepRaw,
    /// Drop it (counted).
    Drop,
}

/// `syslog: tcp:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Listen address (loopback by default).
    pub listen_address: String,
    /// Connections served at once; more are accepted and closed at once (counted).
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Serve TLS (rustls); with `client_ca_file`, mutual TLS.
    pub tls: Option<crate::tls::TlsServerConfig>,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            listen_address: "127.0.0.1:5140".into(),
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
            tls: None,
        }
    }
}

/// `syslog: udp:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpConfig {
    /// Listen address (loopback by default).
    pub listen_address: String,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            listen_address: "127.0.0.1:5140".into(),
        }
    }
}

/// `receivers: syslog:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogReceiverConfig {
    /// `rfc5424` (default) or `rfc3164`.
    pub protocol: Protocol,
    /// IANA time zone of RFC 3164 timestamps, which carry none.
    pub location: String,
    /// Serve TCP (an empty `tcp:` means defaults).
    #[serde(deserialize_with = "present_or_default")]
    pub tcp: Option<TcpConfig>,
    /// Serve UDP (an empty `udp:` means defaults).
    #[serde(deserialize_with = "present_or_default")]
    pub udp: Option<UdpConfig>,
    /// `LF` (default) or `NUL`: what ends a non-transparently framed TCP message.
    pub non_transparent_framing_trailer: Trailer,
    /// Largest message in bytes.
    pub max_message_size: usize,
    /// `truncate` (default) or `reject` messages over `max_message_size`.
    pub oversize: Oversize,
    /// `keep_raw` (default) or `drop` messages that do not parse.
    pub on_error: OnError,
    /// Keep the received line in the `syslog.raw` attribute.
    pub keep_raw: bool,
    /// Resource attributes added to every record (e.g. `service.name`).
    pub resource: BTreeMap<String, String>,
}

impl Default for SyslogReceiverConfig {
    fn default() -> Self {
        SyslogReceiverConfig {
            protocol: Protocol::Rfc5424,
            location: "UTC".into(),
            tcp: None,
            udp: None,
            non_transparent_framing_trailer: Trailer::LF,
            max_message_size: 8192,
            oversize: Oversize::Truncate,
            on_error: OnError::KeepRaw,
            keep_raw: false,
            resource: BTreeMap::new(),
        }
    }
}

impl SyslogReceiverConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.tcp.is_none() && self.udp.is_none() {
            return Err(FieldError::new("tcp", "enable at least one of tcp and udp"));
        }
        self.zone().map_err(|m| FieldError::new("location", m))?;
        if let Some(tcp) = &self.tcp {
            parse_address(&tcp.listen_address)
                .map_err(|m| FieldError::new("tcp.listen_address", m))?;
            if let Some(tls) = &tcp.tls {
                crate::tls::acceptor(tls).map_err(|m| FieldError::new("tcp.tls", m))?;
            }
            if tcp.max_connections == 0 {
                return Err(FieldError::new("tcp.max_connections", "must be at least 1"));
            }
        }
        if let Some(udp) = &self.udp {
            parse_address(&udp.listen_address)
                .map_err(|m| FieldError::new("udp.listen_address", m))?;
        }
        if !(64..=1 << 20).contains(&self.max_message_size) {
            return Err(FieldError::new(
                "max_message_size",
                "must be between 64 bytes and 1 MiB",
            ));
        }
        Ok(())
    }

    pub fn zone(&self) -> Result<chrono_tz::Tz, String> {
        self.location.parse().map_err(|_| {
            format!(
                "`{}` is not an IANA time zone (e.g. UTC, Europe/Berlin)",
                self.location
            )
        })
    }
}
