//! `${env:VAR}`, `${env:VAR:-default}`, `${file:/path}` and `$$` expansion, as the
//! OpenTelemetry Collector's confmap providers define them.
//!
//! The collector expands after parsing; sieve expands the text before parsing so that
//! YAML error positions stay exact, which is only safe when a value cannot change the
//! document's structure. So: a reference that makes up a whole scalar (`key: ${env:X}`)
//! may expand to anything — text that YAML would read as structure is inserted as a quoted
//! string; a reference inside a longer scalar (`endpoint: http://${env:HOST}:4317`) must
//! expand to plain text (no newline, quote, `#`, `: ` or flow characters) or the load
//! fails naming the line. `${file:...}` drops one trailing newline, as files written by
//! editors and Kubernetes secret mounts often end with one.
//!
//! Expanded values are secrets until proven otherwise: [`Expanded::redact`] removes them
//! from any message before it is logged or printed.

use std::fmt;

/// The expanded text and the values that were substituted into it.
pub struct Expanded {
    pub text: String,
    secrets: Vec<String>,
}

impl Expanded {
    /// Replaces every substituted value in `message` with `<redacted>`.
    pub fn redact(&self, message: &str) -> String {
        let mut out = message.to_string();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "<redacted>");
        }
        out
    }
}

/// A reference that could not be expanded.
#[derive(Debug, PartialEq, Eq)]
pub struct ExpandError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Where the values of references come from; the process environment and file system in
/// production, a table in tests.
pub trait Source {
    fn env(&self, name: &str) -> Option<String>;
    fn file(&self, path: &str) -> std::io::Result<String>;
}

/// The process environment and file system.
pub struct Process;

impl Source for Process {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn file(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Expands all references in `text`, line by line so that line numbers are preserved.
pub fn expand(text: &str, source: &dyn Source) -> Result<Expanded, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut secrets = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        out.push_str(&expand_line(line, index + 1, source, &mut secrets)?);
    }
    Ok(Expanded { text: out, secrets })
}

fn expand_line(
    line: &str,
    line_no: usize,
    source: &dyn Source,
    secrets: &mut Vec<String>,
) -> Result<String, ExpandError> {
    if !line.contains('$') || line.trim_start().starts_with('#') {
        return Ok(line.to_string());
    }
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
            continue;
        }
        let Some(body_end) = tail.strip_prefix("${").and_then(|t| t.find('}')) else {
            out.push('$');
            rest = &tail[1..];
            continue;
        };
        let reference = &tail[2..2 + body_end];
        let value = resolve(reference, source).map_err(|message| ExpandError {
            line: line_no,
            message,
        })?;
        let after = &tail[3 + body_end..];
        let whole_scalar = is_scalar_start(&out) && is_scalar_end(after);
        out.push_str(&insertable(&value, whole_scalar, reference, line_no)?);
        if value.len() >= 4 {
            secrets.push(value);
        }
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(reference: &str, source: &dyn Source) -> Result<String, String> {
    if let Some(spec) = reference.strip_prefix("env:") {
        let (name, default) = match spec.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (spec, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{reference}}}`: `{name}` is not an environment variable name"
            ));
        }
        return match (source.env(name), default) {
            (Some(value), _) => Ok(value),
            (None, Some(default)) => Ok(default.to_string()),
            (None, None) => Err(format!(
                "`${{{reference}}}`: environment variable {name} is not set"
            )),
        };
    }
    if let Some(path) = reference.strip_prefix("file:") {
        let mut value = source
            .file(path)
            .map_err(|e| format!("`${{{reference}}}`: cannot read {path}: {e}"))?;
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        return Ok(value);
    }
    Err(format!("`${{{reference}}}`: unknown provider; use ${{env:NAME}} or ${{file:/path}} (and $$ for a literal $)"))
}

/// Whether the text before a reference ends where a scalar value starts.
fn is_scalar_start(before: &str) -> bool {
    let trimmed = before.trim_end_matches(' ');
    trimmed.is_empty()
        || trimmed.ends_with(':')
        || trimmed.ends_with("- ")
        || trimmed.ends_with('-')
}

/// Whether the text after a reference ends the scalar (end of line or a comment).
fn is_scalar_end(after: &str) -> bool {
    let trimmed = after.trim_start_matches(' ');
    trimmed.is_empty()
        || trimmed.starts_with('\n')
        || trimmed.starts_with("\r\n")
        || trimmed.starts_with('#')
}

fn is_plain(value: &str) -> bool {
    !value.is_empty()
        && !value.starts_with([' ', '-', '?', ':', '!', '&', '*', '|', '>', '%', '@', '`'])
        && !value.ends_with(' ')
        && !value.contains(['\n', '\r', '"', '\'', '#', '{', '}', '[', ']', ',', '\t'])
        && !value.contains(": ")
        && !value.ends_with(':')
}

fn insertable(
    value: &str,
    whole_scalar: bool,
    reference: &str,
    line: usize,
) -> Result<String, ExpandError> {
    if is_plain(value) {
        return Ok(value.to_string());
    }
    if whole_scalar {
        return Ok(serde_json::to_string(value).expect("a string always serializes"));
    }
    Err(ExpandError {
        line,
        message: format!(
            "`${{{reference}}}` expands to text that cannot sit inside a longer value; make the reference the whole value"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Table(HashMap<&'static str, &'static str>);

    impl Source for Table {
        fn env(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
        fn file(&self, path: &str) -> std::io::Result<String> {
            self.0
                .get(path)
                .map(|v| v.to_string())
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
        }
    }

    fn table() -> Table {
        Table(HashMap::from([
            ("HOST", "collector.local"),
            ("PORT", "4317"),
            ("TOKEN", "s3cr3t: #x"),
            ("/run/secret", "from-file\n"),
        ]))
    }

    fn expanded(text: &str) -> Result<String, ExpandError> {
        expand(text, &table()).map(|e| e.text)
    }

    #[test]
    fn env_references_expand_inside_values() {
        assert_eq!(
            expanded("endpoint: http://${env:HOST}:${env:PORT}\n").unwrap(),
            "endpoint: http://collector.local:4317\n"
        );
    }

    #[test]
    fn defaults_apply_only_when_unset() {
        assert_eq!(
            expanded("a: ${env:NOPE:-7}\nb: ${env:PORT:-1}\n").unwrap(),
            "a: 7\nb: 4317\n"
        );
    }

    #[test]
    fn unset_variable_without_default_names_line_and_variable() {
        let err = expanded("x: 1\ny: ${env:NOPE}\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("NOPE is not set"), "{}", err.message);
    }

    #[test]
    fn file_reference_drops_one_trailing_newline() {
        assert_eq!(
            expanded("k: ${file:/run/secret}\n").unwrap(),
            "k: from-file\n"
        );
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        assert_eq!(
            expanded("k: a$$b $${env:HOST}\n").unwrap(),
            "k: a$b ${env:HOST}\n"
        );
    }

    #[test]
    fn structural_text_as_whole_value_is_quoted() {
        assert_eq!(
            expanded("token: ${env:TOKEN}\n").unwrap(),
            "token: \"s3cr3t: #x\"\n"
        );
    }

    #[test]
    fn structural_text_inside_a_value_is_refused() {
        let err = expanded("auth: Bearer ${env:TOKEN}\n").unwrap_err();
        assert!(err.message.contains("whole value"), "{}", err.message);
    }

    #[test]
    fn unknown_provider_is_an_error() {
        assert!(expanded("k: ${vault:x}\n")
            .unwrap_err()
            .message
            .contains("unknown provider"));
    }

    #[test]
    fn redact_hides_substituted_values() {
        let e = expand("k: ${env:HOST}\n", &table()).unwrap();
        assert_eq!(
            e.redact("invalid value collector.local"),
            "invalid value <redacted>"
        );
    }

    #[test]
    fn comments_are_not_expanded() {
        assert_eq!(expanded("# ${env:NOPE}\n").unwrap(), "# ${env:NOPE}\n");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    struct Anything;
    impl Source for Anything {
        fn env(&self, name: &str) -> Option<String> {
            (name.len() % 2 == 0).then(|| format!("v: {name}\n#"))
        }
        fn file(&self, path: &str) -> std::io::Result<String> {
            Ok(path.repeat(2))
        }
    }

    proptest! {
        #[test]
        fn expansion_never_panics_and_keeps_line_count(text in r"([a-z: \-]|\$|\{|\}|env:|file:|:-|\n){0,80}") {
            if let Ok(expanded) = expand(&text, &Anything) {
                prop_assert_eq!(expanded.text.matches('\n').count(), text.matches('\n').count());
            }
        }

        #[test]
        fn config_parsing_never_panics(text in r"(receivers|service|pipelines|traces|otlp|batch|exporters|debug|[:\-\[\]{}, ]|\n  |\n){0,60}") {
            let _ = crate::config::Config::parse(&text, "prop");
        }
    }
}
