//! `.env` and `env_file` files: `KEY=value` lines, `#` comments, an optional `export ` prefix,
//! and single- or double-quoted values (double quotes understand `\n`, `\"` and `\\`).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvError {
    pub line: u32,
    pub message: String,
}

/// Parse a dotenv file. Lines without `=` (`KEY`) are errors here: in an env file they are
/// almost always a typo, and silently dropping them loses configuration.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, DotenvError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i as u32 + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            return Err(DotenvError {
                line: line_no,
                message: format!("expected KEY=value, found {:?}", truncate(line)),
            });
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(DotenvError {
                line: line_no,
                message: format!("invalid variable name {key:?}"),
            });
        }
        let value = unquote(value.trim()).map_err(|message| DotenvError {
            line: line_no,
            message,
        })?;
        out.push((key.to_string(), value));
    }
    Ok(out)
}

pub fn parse_map(text: &str) -> Result<BTreeMap<String, String>, DotenvError> {
    Ok(parse(text)?.into_iter().collect())
}

fn unquote(v: &str) -> Result<String, String> {
    if let Some(inner) = v.strip_prefix('\'') {
        let end = inner.find('\'').ok_or("unterminated single quote")?;
        return Ok(inner[..end].to_string());
    }
    if let Some(inner) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Ok(out),
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(other) => out.push(other),
                    None => break,
                },
                c => out.push(c),
            }
        }
        return Err("unterminated double quote".into());
    }
    // Unquoted: an inline comment starts at " #".
    let v = match v.find(" #") {
        Some(i) => v[..i].trim_end(),
        None => v,
    };
    Ok(v.to_string())
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_common_forms() {
        let text = "# comment\nA=1\nexport B = two\nC='single # kept'\nD=\"line\\nbreak\"\nE=x # note\nF=\n\n";
        let m = parse_map(text).unwrap();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "two");
        assert_eq!(m["C"], "single # kept");
        assert_eq!(m["D"], "line\nbreak");
        assert_eq!(m["E"], "x");
        assert_eq!(m["F"], "");
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("A=1\nOOPS\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(parse("A=\"open\n").unwrap_err().line, 1);
    }
}
