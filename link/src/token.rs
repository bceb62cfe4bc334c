//! The one-time enrolment token: `ark1-<secret>-<ca-pin>`. A 128-bit
//! random secret (the commander stores only its SHA-256 and marks it used on
//! first use) and the SHA-256 of the commander's CA certificate, which the
//! agent pins for the enrolment handshake. The commander issues it; the
//! agent presents it.

use std::fmt;
use std::str::FromStr;

use crate::LinkError;

const TOKEN_PREFIX: &str = "ark1";
const SECRET_HEX_LEN: usize = 32;
const PIN_HEX_LEN: usize = 64;

/// A parsed enrolment token.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollToken {
    /// Hex of 16 random bytes.
    pub secret: String,
    /// Hex SHA-256 of the commander's CA certificate (DER).
    pub ca_pin: String,
}

impl fmt::Debug for EnrollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollToken")
            .field("ca_pin", &self.ca_pin)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for EnrollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}-{}-{}", self.secret, self.ca_pin)
    }
}

impl FromStr for EnrollToken {
    type Err = LinkError;

    fn from_str(s: &str) -> Result<Self, LinkError> {
        let mut parts = s.trim().split('-');
        let (Some(prefix), Some(secret), Some(pin), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(LinkError::BadToken("expected ark1-SECRET-PIN".into()));
        };
        if prefix != TOKEN_PREFIX {
            return Err(LinkError::BadToken(format!(
                "unknown token version {prefix:?}"
            )));
        }
        let is_hex =
            |v: &str, len: usize| v.len() == len && v.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex(secret, SECRET_HEX_LEN) {
            return Err(LinkError::BadToken(
                "the secret part is not 32 hex digits".into(),
            ));
        }
        if !is_hex(pin, PIN_HEX_LEN) {
            return Err(LinkError::BadToken(
                "the CA pin is not 64 hex digits".into(),
            ));
        }
        Ok(Self {
            secret: secret.to_ascii_lowercase(),
            ca_pin: pin.to_ascii_lowercase(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_rejects_garbage() {
        let token = EnrollToken {
            secret: "0123456789abcdef0123456789abcdef".into(),
            ca_pin: "ab".repeat(32),
        };
        let parsed: EnrollToken = token.to_string().parse().expect("round trip");
        assert_eq!(parsed, token);
        for bad in [
            "",
            "ark1-00",
            "ark2-0123456789abcdef0123456789abcdef-abab",
            &format!("ark1-0123456789abcdef0123456789abcdeg-{}", "ab".repeat(32)),
            &format!(
                "ark1-0123456789abcdef0123456789abcdef-{}-x",
                "ab".repeat(32)
            ),
        ] {
            assert!(bad.parse::<EnrollToken>().is_err(), "{bad:?} parsed");
        }
    }
}
