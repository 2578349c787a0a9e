//! Compose variable interpolation: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?message}`, `${VAR?message}`, `${VAR:+alt}`, `${VAR+alt}` and `$$` for a literal `$`.
//! Defaults may themselves hold variables (`${A:-${B}}`), as in the Compose specification.
//!
//! Variables come from the stack directory's `.env` file and the process environment, the
//! environment winning, as `docker compose` does.

use std::collections::BTreeMap;

use super::yaml::{Node, Span, Value};

/// Where variables are looked up.
#[derive(Clone, Debug, Default)]
pub struct Variables {
    vars: BTreeMap<String, String>,
}

impl Variables {
    pub fn new(vars: BTreeMap<String, String>) -> Self {
        Variables { vars }
    }

    /// `.env` values overlaid with the process environment.
    pub fn from_dotenv_and_process(dotenv: BTreeMap<String, String>) -> Self {
        let mut vars = dotenv;
        vars.extend(std::env::vars());
        Variables { vars }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct InterpolationError {
    pub span: Span,
    /// Where the value is: map keys and list indexes from the root.
    pub path: Vec<String>,
    pub message: String,
}

/// Interpolate every scalar value of the tree in place (keys are left alone, as in Compose).
pub fn interpolate_tree(node: &mut Node, vars: &Variables, errors: &mut Vec<InterpolationError>) {
    interpolate_at(node, vars, &mut Vec::new(), errors);
}

fn interpolate_at(
    node: &mut Node,
    vars: &Variables,
    path: &mut Vec<String>,
    errors: &mut Vec<InterpolationError>,
) {
    match &mut node.value {
        Value::Scalar(s) => {
            if s.text.contains('$') {
                match interpolate(&s.text, vars) {
                    // Interpolated values are text, as in Compose: `KEY: ${UNSET}` is "", not
                    // null; numbers and booleans are typed afterwards by where they stand.
                    Ok(text) => {
                        s.text = text;
                        s.plain = false;
                    }
                    Err(message) => errors.push(InterpolationError {
                        span: node.span,
                        path: path.clone(),
                        message,
                    }),
                }
            }
        }
        Value::Seq(items) => {
            for (i, n) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                interpolate_at(n, vars, path, errors);
                path.pop();
            }
        }
        Value::Map(entries) => {
            for e in entries.iter_mut() {
                path.push(e.key.clone());
                interpolate_at(&mut e.value, vars, path, errors);
                path.pop();
            }
        }
    }
}

/// Interpolate one string.
pub fn interpolate(input: &str, vars: &Variables) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let rest = expand(input, vars, &mut out, false)?;
    debug_assert!(rest.is_empty());
    Ok(out)
}

/// Expand `input` into `out`. Inside a `${...}` default (`nested`), stops at the closing `}`
/// and returns what follows it.
fn expand<'a>(
    mut input: &'a str,
    vars: &Variables,
    out: &mut String,
    nested: bool,
) -> Result<&'a str, String> {
    loop {
        let stop = if nested {
            input.find(['$', '}'])
        } else {
            input.find('$')
        };
        let Some(i) = stop else {
            if nested {
                return Err("unterminated \"${\": missing \"}\"".into());
            }
            out.push_str(input);
            return Ok("");
        };
        out.push_str(&input[..i]);
        if input.as_bytes()[i] == b'}' {
            return Ok(&input[i + 1..]);
        }
        let after = &input[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            input = r;
        } else if let Some(r) = after.strip_prefix('{') {
            input = braced(r, vars, out)?;
        } else {
            let len = name_len(after);
            if len == 0 {
                return Err(format!(
                    "invalid interpolation at \"{}\": use \"$$\" for a literal \"$\"",
                    truncate(&input[i..])
                ));
            }
            out.push_str(vars.get(&after[..len]).unwrap_or(""));
            input = &after[len..];
        }
    }
}

/// Handle the inside of `${...}`; `input` starts right after `{`.
fn braced<'a>(input: &'a str, vars: &Variables, out: &mut String) -> Result<&'a str, String> {
    let len = name_len(input);
    if len == 0 {
        return Err(format!(
            "invalid interpolation \"${{{}\": expected a variable name",
            truncate(input)
        ));
    }
    let name = &input[..len];
    let rest = &input[len..];
    let value = vars.get(name);
    let set_and_nonempty = value.is_some_and(|v| !v.is_empty());
    if let Some(r) = rest.strip_prefix('}') {
        out.push_str(value.unwrap_or(""));
        return Ok(r);
    }
    let (op, r) = [":-", ":?", ":+", "-", "?", "+"]
        .iter()
        .find_map(|op| rest.strip_prefix(op).map(|r| (*op, r)))
        .ok_or_else(|| {
            format!(
                "invalid interpolation \"${{{}\": expected \"}}\", \":-\", \"-\", \":?\", \"?\", \":+\" or \"+\" after the variable name",
                truncate(input)
            )
        })?;
    // The word after the operator may hold variables itself; expand it only when used, but
    // always parse it to find the closing brace.
    let mut word = String::new();
    let after = expand(r, vars, &mut word, true)?;
    match op {
        ":-" => out.push_str(if set_and_nonempty {
            value.unwrap()
        } else {
            &word
        }),
        "-" => out.push_str(value.unwrap_or(&word)),
        ":+" => out.push_str(if set_and_nonempty { &word } else { "" }),
        "+" => out.push_str(if value.is_some() { &word } else { "" }),
        ":?" | "?" => {
            let ok = if op == ":?" {
                set_and_nonempty
            } else {
                value.is_some()
            };
            if !ok {
                let why = if word.is_empty() {
                    format!("required variable {name} is missing a value")
                } else {
                    format!("required variable {name} is missing a value: {word}")
                };
                return Err(why);
            }
            out.push_str(value.unwrap_or(""));
        }
        _ => {
            return Err(format!(
                "invalid interpolation operator \"{op}\" in ${{{name}...}}"
            ))
        }
    }
    Ok(after)
}

fn name_len(s: &str) -> usize {
    let b = s.as_bytes();
    if b.is_empty() || !(b[0].is_ascii_alphabetic() || b[0] == b'_') {
        return 0;
    }
    b.iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count()
}

fn truncate(s: &str) -> String {
    s.chars().take(24).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Variables {
        Variables::new(
            [("TAG", "2"), ("EMPTY", ""), ("NAME", "web")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn i(s: &str) -> Result<String, String> {
        interpolate(s, &vars())
    }

    #[test]
    fn plain_forms() {
        assert_eq!(i("nginx:${TAG}").unwrap(), "nginx:2");
        assert_eq!(i("nginx:$TAG").unwrap(), "nginx:2");
        assert_eq!(i("$NAME-$TAG").unwrap(), "web-2");
        assert_eq!(i("${MISSING}x").unwrap(), "x");
        assert_eq!(i("price $$5").unwrap(), "price $5");
        assert_eq!(i("$$TAG").unwrap(), "$TAG");
    }

    #[test]
    fn defaults_and_alternatives() {
        assert_eq!(i("${MISSING:-1}").unwrap(), "1");
        assert_eq!(i("${EMPTY:-1}").unwrap(), "1");
        assert_eq!(i("${EMPTY-1}").unwrap(), "");
        assert_eq!(i("${MISSING-1}").unwrap(), "1");
        assert_eq!(i("${TAG:-1}").unwrap(), "2");
        assert_eq!(i("${TAG:+set}").unwrap(), "set");
        assert_eq!(i("${EMPTY:+set}").unwrap(), "");
        assert_eq!(i("${EMPTY+set}").unwrap(), "set");
        assert_eq!(i("${MISSING:-${NAME}}").unwrap(), "web");
        assert_eq!(i("${MISSING:-a-${MISSING:-b}-c}").unwrap(), "a-b-c");
        assert_eq!(i("${MISSING:-}").unwrap(), "");
    }

    #[test]
    fn required_variables() {
        assert_eq!(
            i("${MISSING:?set MISSING in .env}").unwrap_err(),
            "required variable MISSING is missing a value: set MISSING in .env"
        );
        assert!(i("${EMPTY:?x}").is_err());
        assert_eq!(i("${EMPTY?x}").unwrap(), "");
        assert_eq!(i("${TAG:?x}").unwrap(), "2");
    }

    #[test]
    fn malformed_is_an_error_not_a_panic() {
        for bad in [
            "${",
            "${}",
            "${TAG",
            "${TAG:-x",
            "$",
            "a $ b",
            "${1}",
            "${TAG!}",
            "${TAG:-${}",
        ] {
            assert!(i(bad).is_err(), "{bad:?} should be an error");
        }
    }
}
