//! Finds the line of a key path in block-style YAML, for errors found after parsing
//! (a pipeline naming an undefined component, a signal a component does not accept).
//!
//! serde_yaml reports positions for errors it raises itself but does not keep positions in
//! parsed values, so semantic checks ask this indentation walk where a key or a list
//! element sits. It understands the block mappings and sequences (and flow lists on one
//! line) that collector configurations are written in; for anything else it returns
//! `None` and the message carries the key path alone.

/// One key line: its indentation, key and the text after the colon.
struct KeyLine<'a> {
    indent: usize,
    key: &'a str,
    rest: &'a str,
}

fn key_line(line: &str) -> Option<KeyLine<'_>> {
    let content = line.trim_start_matches(' ');
    let mut indent = line.len() - content.len();
    let content = match content.strip_prefix("- ") {
        Some(item) => {
            indent += 2;
            item.trim_start_matches(' ')
        }
        None => content,
    };
    if content.is_empty() || content.starts_with('#') {
        return None;
    }
    let colon = content
        .find(": ")
        .or_else(|| content.strip_suffix(':').map(|k| k.len()))?;
    let key = content[..colon]
        .trim()
        .trim_matches(|c| c == '"' || c == '\'');
    Some(KeyLine {
        indent,
        key,
        rest: content[colon + 1..].trim(),
    })
}

/// The key written on `line`, if it holds one.
pub fn key_of_line(line: &str) -> Option<&str> {
    key_line(line).map(|k| k.key)
}

/// The 1-based line of the last key at `path` (a repeated key's second occurrence).
pub fn last_line_of(text: &str, path: &[&str]) -> Option<usize> {
    keys_at(text, path).last().map(|(line, _)| line)
}

/// The 1-based line of the key at `path`.
pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    find_key(text, path).map(|(line, _)| line)
}

/// Returns (line number, indentation) of the key at `path`.
fn find_key(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    keys_at(text, path).next()
}

/// Every (line number, indentation) where the key at `path` appears, in order.
fn keys_at<'a>(text: &'a str, path: &'a [&'a str]) -> impl Iterator<Item = (usize, usize)> + 'a {
    let mut stack: Vec<(usize, &str)> = Vec::new();
    text.lines().enumerate().filter_map(move |(index, line)| {
        let k = key_line(line)?;
        while stack.last().is_some_and(|(indent, _)| *indent >= k.indent) {
            stack.pop();
        }
        stack.push((k.indent, k.key));
        let matches = stack.len() == path.len() && stack.iter().zip(path).all(|((_, a), b)| a == b);
        matches.then_some((index + 1, k.indent))
    })
}

/// The line, among the keys at the same indentation as the key on `line` and after it
/// (the rest of its map), whose value is exactly `value`.
pub fn sibling_line_with_value(text: &str, line: usize, value: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = key_line(lines.get(line - 1)?)?.indent;
    for (offset, candidate) in lines[line - 1..].iter().enumerate() {
        let Some(k) = key_line(candidate) else {
            continue;
        };
        if k.indent < indent {
            break;
        }
        let rest = k.rest.trim_matches(|c| c == '"' || c == '\'');
        if k.indent == indent && rest == value {
            return Some(line + offset);
        }
    }
    None
}

/// The 1-based line where `value` appears as an element of the list (or the scalar) at
/// `path`, falling back to the key's own line.
pub fn line_of_value(text: &str, path: &[&str], value: &str) -> Option<usize> {
    let (key_line_no, key_indent) = find_key(text, path)?;
    let lines: Vec<&str> = text.lines().collect();
    let own = key_line(lines[key_line_no - 1])
        .map(|k| k.rest)
        .unwrap_or("");
    if contains_token(own, value) {
        return Some(key_line_no);
    }
    for (offset, line) in lines[key_line_no..].iter().enumerate() {
        let content = line.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if line.len() - content.len() <= key_indent && !content.starts_with("- ") {
            break;
        }
        if contains_token(content.trim_start_matches("- "), value) {
            return Some(key_line_no + offset + 1);
        }
    }
    Some(key_line_no)
}

fn contains_token(text: &str, value: &str) -> bool {
    text.split(|c: char| c == '[' || c == ']' || c == ',' || c == '#' || c.is_whitespace())
        .map(|t| t.trim_matches(|c| c == '"' || c == '\''))
        .any(|t| t == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
receivers:
  otlp:
    protocols:
      grpc:
service:
  pipelines:
    traces:
      receivers: [otlp, missing]
      exporters:
        - debug
        - otlp/tempo
    logs:
      receivers: [otlp]
";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(
            line_of(DOC, &["receivers", "otlp", "protocols", "grpc"]),
            Some(4)
        );
        assert_eq!(line_of(DOC, &["service", "pipelines", "logs"]), Some(12));
        assert_eq!(line_of(DOC, &["service", "nope"]), None);
    }

    #[test]
    fn finds_flow_list_elements_on_the_key_line() {
        assert_eq!(
            line_of_value(
                DOC,
                &["service", "pipelines", "traces", "receivers"],
                "missing"
            ),
            Some(8)
        );
    }

    #[test]
    fn finds_block_list_elements() {
        assert_eq!(
            line_of_value(
                DOC,
                &["service", "pipelines", "traces", "exporters"],
                "otlp/tempo"
            ),
            Some(11)
        );
    }
}
