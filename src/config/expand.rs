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
//! Expanded values are secrets until proven otherwise. Every error about a configuration
//! — `sieve validate`, a failed start, a failed reload — is rendered through the
//! [`Redactor`] of the configuration it is about: a value that came from a reference is
//! shown as the reference (`${env:EP}`), and any piece of it shown on its own (the
//! password of a URL, a host) as `<redacted>`. Values shorter than three characters are
//! not treated as secrets (they would blank out common words and numbers).

use std::fmt;

/// The expanded text and what was substituted into it.
pub struct Expanded {
    pub text: String,
    pub redactor: Redactor,
}

/// One reference and the value it expanded to.
#[derive(Clone, PartialEq, Eq)]
struct Substitution {
    /// As written, e.g. `${env:EP}`.
    reference: String,
    value: String,
}

/// Keeps the values of a configuration's references out of messages.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redactor {
    /// Longest value first, so a value containing another is replaced whole.
    substitutions: Vec<Substitution>,
}

/// Shorter values are not treated as secrets.
const MIN_SECRET_LEN: usize = 3;

/// A run of a message: text to check, or a reference put where a value was.
enum Part {
    Text(String),
    Reference(String),
}

impl Redactor {
    fn add(&mut self, reference: &str, value: &str) {
        if value.len() < MIN_SECRET_LEN {
            return;
        }
        let substitution = Substitution {
            reference: format!("${{{reference}}}"),
            value: value.to_string(),
        };
        if !self.substitutions.contains(&substitution) {
            self.substitutions.push(substitution);
            self.substitutions
                .sort_by_key(|s| std::cmp::Reverse(s.value.len()));
        }
    }

    /// `message` with every substituted value shown as its reference, and every word of
    /// a substituted value (a run of letters and digits) that appears alone as `<redacted>`.
    pub fn redact(&self, message: &str) -> String {
        let mut parts = vec![Part::Text(message.to_string())];
        for s in &self.substitutions {
            parts = parts
                .into_iter()
                .flat_map(|part| match part {
                    Part::Text(text) => split_at_value(&text, s),
                    reference => vec![reference],
                })
                .collect();
        }
        parts
            .into_iter()
            .map(|part| match part {
                Part::Text(text) => self.redact_words(&text),
                Part::Reference(reference) => reference,
            })
            .collect()
    }

    fn redact_words(&self, text: &str) -> String {
        let secret_word = |word: &str| {
            word.len() >= MIN_SECRET_LEN
                && self
                    .substitutions
                    .iter()
                    .any(|s| secret_words(&s.value).any(|w| w == word))
        };
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(char::is_alphanumeric) {
            out.push_str(&rest[..start]);
            let word_len = rest[start..]
                .find(|c: char| !c.is_alphanumeric())
                .unwrap_or(rest.len() - start);
            let word = &rest[start..start + word_len];
            out.push_str(if secret_word(word) {
                "<redacted>"
            } else {
                word
            });
            rest = &rest[start + word_len..];
        }
        out.push_str(rest);
        out
    }
}

/// The words of a value that must not appear alone: in a URL, those of its user info
/// and query (a host and port are addresses, not secrets); otherwise all of them.
fn secret_words(value: &str) -> impl Iterator<Item = &str> {
    let secret_parts: Vec<&str> = match value.split_once("://") {
        Some((_, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let user_info = authority.rsplit_once('@').map_or("", |(user, _)| user);
            let query = rest.split_once('?').map_or("", |(_, q)| q);
            vec![user_info, query]
        }
        None => vec![value],
    };
    secret_parts
        .into_iter()
        .flat_map(|part| part.split(|c: char| !c.is_alphanumeric()))
        .filter(|w| !w.is_empty())
}

/// `text` cut at every occurrence of the substitution's value, the reference in between.
fn split_at_value(text: &str, s: &Substitution) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(s.value.as_str()) {
        parts.push(Part::Text(rest[..at].to_string()));
        parts.push(Part::Reference(s.reference.clone()));
        rest = &rest[at + s.value.len()..];
    }
    parts.push(Part::Text(rest.to_string()));
    parts
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} values)", self.substitutions.len())
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

/// The largest file a `${file:..}` reference may read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

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

    /// Reads at most [`MAX_FILE_BYTES`]: a secret or a certificate is small, and a path
    /// such as `/dev/zero` must not make sieve read forever.
    fn file(&self, path: &str) -> std::io::Result<String> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)?
            .take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("larger than {MAX_FILE_BYTES} bytes"),
            ));
        }
        Ok(text)
    }
}

/// Expands all references in `text`, line by line so that line numbers are preserved.
pub fn expand(text: &str, source: &dyn Source) -> Result<Expanded, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut redactor = Redactor::default();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        out.push_str(&expand_line(line, index + 1, source, &mut redactor)?);
    }
    Ok(Expanded {
        text: out,
        redactor,
    })
}

fn expand_line(
    line: &str,
    line_no: usize,
    source: &dyn Source,
    redactor: &mut Redactor,
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
        let inserted = insertable(&value, whole_scalar, reference, line_no)?;
        out.push_str(&inserted);
        redactor.add(reference, &value);
        redactor.add(reference, &inserted);
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
    fn in_urls_only_user_info_and_query_are_secret_words() {
        let words: Vec<&str> =
            secret_words("https://admin:hunter2@host.example:4317/path?token=abc123").collect();
        assert_eq!(words, ["admin", "hunter2", "token", "abc123"]);
        let words: Vec<&str> = secret_words("http://host:4317/v1").collect();
        assert!(words.is_empty());
    }

    #[test]
    fn redact_shows_the_reference_for_a_value_and_hides_its_words() {
        let e = expand("k: ${env:HOST}\nt: ${env:TOKEN}\n", &table()).unwrap();
        let r = &e.redactor;
        assert_eq!(
            r.redact("invalid value collector.local"),
            "invalid value ${env:HOST}"
        );
        assert_eq!(
            r.redact("no route to local (collector)"),
            "no route to <redacted> (<redacted>)"
        );
        // the quoted form YAML saw is a value too
        assert_eq!(r.redact("bad: \"s3cr3t: #x\""), "bad: ${env:TOKEN}");
        assert_eq!(r.redact("s3cr3t alone"), "<redacted> alone");
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn an_endless_file_is_refused_not_read_forever() {
        let error = Process.file("/dev/zero").unwrap_err();
        assert!(error.to_string().contains("larger than"), "{error}");
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
            name.len()
                .is_multiple_of(2)
                .then(|| format!("v: {name}\n#"))
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
    }
}
