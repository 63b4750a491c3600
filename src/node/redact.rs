//! Redaction of anything token-shaped in text that came from outside (a credential plugin's
//! stderr, its arguments) before it may reach a log line: JWTs, PEM blocks, long runs of
//! base64 or hex, the value after `token:`/`password=`/..., and what follows `Bearer`/`Basic`.
//! Over-redacting is fine; a secret reaching the journal is not.

use std::sync::LazyLock;

use regex::{Captures, Regex};

/// What a secret is replaced with.
pub const MARK: &str = "[REDACTED]";

/// Each rule is a literal that compiles: a failure is a bug caught by the unit tests.
fn rule(pattern: &str) -> Option<Regex> {
    Regex::new(pattern).ok()
}

static PEM: LazyLock<Option<Regex>> =
    LazyLock::new(|| rule(r"-----BEGIN [A-Z0-9 ]+-----(?s:.*?)(-----END [A-Z0-9 ]+-----|$)"));
static SCHEME: LazyLock<Option<Regex>> = LazyLock::new(|| rule(r"(?i)\b(bearer|basic)\s+\S+"));
static KEYED: LazyLock<Option<Regex>> = LazyLock::new(|| {
    rule(
        r#"(?i)\b([a-z_-]*(?:token|password|passwd|secret|authorization|api[_-]?key|key[_-]?data|credential)s?)("?\s*[:=]\s*"?)([^\s"',}]+)"#,
    )
});
static JWT: LazyLock<Option<Regex>> =
    LazyLock::new(|| rule(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)?"));
static RUN: LazyLock<Option<Regex>> = LazyLock::new(|| rule(r"[A-Za-z0-9+/=_.-]{20,}"));

/// `text` with everything token-shaped replaced by [`MARK`]. When a rule could not be compiled
/// (never, see the tests), the whole text is withheld rather than shown unredacted.
pub fn redact(text: &str) -> String {
    let rules = [&*PEM, &*SCHEME, &*KEYED, &*JWT, &*RUN];
    let Some([pem, scheme, keyed, jwt, run]) = rules
        .iter()
        .map(|r| r.as_ref())
        .collect::<Option<Vec<&Regex>>>()
        .and_then(|v| <[&Regex; 5]>::try_from(v).ok())
    else {
        return MARK.to_string();
    };
    let text = pem.replace_all(text, MARK);
    let text = scheme.replace_all(&text, |c: &Captures| format!("{} {MARK}", &c[1]));
    let text = keyed.replace_all(&text, |c: &Captures| format!("{}{}{MARK}", &c[1], &c[2]));
    let text = jwt.replace_all(&text, MARK);
    // A long run with both letters and digits: base64, hex, or a random token. Words and paths
    // without digits stay readable.
    let text = run.replace_all(&text, |c: &Captures| {
        let s = &c[0];
        let letters = s.bytes().any(|b| b.is_ascii_alphabetic());
        let digits = s.bytes().any(|b| b.is_ascii_digit());
        if letters && digits {
            MARK.to_string()
        } else {
            s.to_string()
        }
    });
    text.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_compiles() {
        for r in [&*PEM, &*SCHEME, &*KEYED, &*JWT, &*RUN] {
            assert!(r.is_some());
        }
    }

    #[test]
    fn token_shaped_text_is_redacted() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJub2RlIn0.c2lnbmF0dXJl";
        let cases = [
            (format!("got {jwt} back"), "got [REDACTED] back"),
            (
                format!("Authorization: Bearer {jwt}"),
                "Authorization: [REDACTED] [REDACTED]",
            ),
            ("token: hunter2".to_string(), "token: [REDACTED]"),
            (
                r#"{"token":"abc","x":1}"#.to_string(),
                r#"{"token":"[REDACTED]","x":1}"#,
            ),
            ("password=p@ss word".to_string(), "password=[REDACTED] word"),
            (
                "access_token = zzz".to_string(),
                "access_token = [REDACTED]",
            ),
            ("basic dXNlcjpwYXNz".to_string(), "basic [REDACTED]"),
            (
                "key 0123456789abcdef0123456789abcdef here".to_string(),
                "key [REDACTED] here",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nMIIEv\n-----END PRIVATE KEY-----\nok".to_string(),
                "[REDACTED]\nok",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(redact(&input), want, "{input}");
        }
    }

    #[test]
    fn plain_messages_stay_readable() {
        for text in [
            "error: could not reach the identity provider at /usr/local/bin/aws-iam-authenticator",
            "exit status 1: connection refused",
            "",
        ] {
            assert_eq!(redact(text), text);
        }
    }
}
