//! The access token a client presents in its `Hello`.

use std::fmt;

/// A secret that opens a server. Its `Debug` form is redacted, so a token
/// inside a message or an error never reaches a log line.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Token(String);

impl Token {
    pub fn new(token: String) -> Self {
        Token(token)
    }

    /// The token itself: only for the wire and for checking it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no token was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Token(none)"
        } else {
            "Token(redacted)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let shown = format!("{:?}", Token::new("s3cret-token-value".into()));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
