//! Compose variable interpolation: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?message}`, `${VAR?message}`, `${VAR:+alt}`, `${VAR+alt}` and `$$` for a literal `$`.
//! Defaults may themselves hold variables (`${A:-${B}}`), as in the Compose specification.
//!
//! Variables come from what the caller gives: the stacks' `.env` files and the variables an
//! operator passes explicitly (see `desired::LoadOptions`). Never the process environment as a
//! whole: a committed file must not be able to read the reconciler's own secrets.

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

/// Defaults nested deeper than this (`${A:-${B:-${C:-...}}}`) are refused: real files nest two
/// or three; a machine-made file nested thousands deep would exhaust the stack.
pub const MAX_NESTING: usize = 32;

/// What interpolating a whole tree found besides the new values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Findings {
    pub errors: Vec<InterpolationError>,
    /// `$X` or `${X}` with X unset: replaced by "" (docker warns the same way).
    pub unset: Vec<UnsetVariable>,
    /// Values that used unset or empty variables, with those variables and whether the whole
    /// value came out blank: an error about such a value names them.
    pub blank: Vec<(Vec<String>, Vec<String>, bool)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct UnsetVariable {
    pub span: Span,
    pub path: Vec<String>,
    pub name: String,
}

/// Interpolate every scalar value of the tree in place (keys are left alone, as in Compose).
pub fn interpolate_tree(node: &mut Node, vars: &Variables) -> Findings {
    let mut findings = Findings::default();
    interpolate_at(node, vars, &mut Vec::new(), &mut findings);
    findings
}

fn interpolate_at(node: &mut Node, vars: &Variables, path: &mut Vec<String>, out: &mut Findings) {
    match &mut node.value {
        Value::Scalar(s) => {
            if s.text.contains('$') {
                match interpolate_traced(&s.text, vars) {
                    // Interpolated values are text, as in Compose: `KEY: ${UNSET}` is "", not
                    // null; numbers and booleans are typed afterwards by where they stand.
                    Ok(traced) => {
                        for name in traced.unset {
                            out.unset.push(UnsetVariable {
                                span: node.span,
                                path: path.clone(),
                                name,
                            });
                        }
                        if !traced.blank.is_empty() {
                            let whole = traced.text.trim().is_empty();
                            out.blank.push((path.clone(), traced.blank, whole));
                        }
                        s.text = traced.text;
                        s.plain = false;
                    }
                    Err(message) => out.errors.push(InterpolationError {
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
                interpolate_at(n, vars, path, out);
                path.pop();
            }
        }
        Value::Map(entries) => {
            for e in entries.iter_mut() {
                path.push(e.key.clone());
                interpolate_at(&mut e.value, vars, path, out);
                path.pop();
            }
        }
    }
}

/// Interpolate one string.
pub fn interpolate(input: &str, vars: &Variables) -> Result<String, String> {
    interpolate_traced(input, vars).map(|t| t.text)
}

/// The result of interpolating one string, with the variables that gave nothing.
#[derive(Debug, Default)]
struct Traced {
    text: String,
    /// Read as `$X` / `${X}` while unset.
    unset: Vec<String>,
    /// Unset or empty variables whose value was used.
    blank: Vec<String>,
}

fn interpolate_traced(input: &str, vars: &Variables) -> Result<Traced, String> {
    let mut t = Traced {
        text: String::with_capacity(input.len()),
        ..Default::default()
    };
    let mut cx = Expand {
        vars,
        unset: &mut t.unset,
        blank: &mut t.blank,
    };
    let rest = cx.expand(input, &mut t.text, 0)?;
    debug_assert!(rest.is_empty());
    t.unset.dedup();
    t.blank.dedup();
    Ok(t)
}

struct Expand<'v, 'o> {
    vars: &'v Variables,
    unset: &'o mut Vec<String>,
    blank: &'o mut Vec<String>,
}

impl Expand<'_, '_> {
    /// The value of a variable used as it is; unset or empty ones are noted.
    fn value(&mut self, name: &str, warn_unset: bool) -> String {
        match self.vars.get(name) {
            Some(v) if !v.is_empty() => v.to_string(),
            found => {
                if found.is_none() && warn_unset {
                    self.unset.push(name.to_string());
                }
                self.blank.push(name.to_string());
                String::new()
            }
        }
    }

    /// Expand `input` into `out`. Inside a `${...}` default (`depth` > 0), stops at the closing
    /// `}` and returns what follows it.
    fn expand<'a>(
        &mut self,
        mut input: &'a str,
        out: &mut String,
        depth: usize,
    ) -> Result<&'a str, String> {
        if depth > MAX_NESTING {
            return Err(format!(
                "variables nested more than {MAX_NESTING} deep (${{A:-${{B:-...}}}}): write the value out"
            ));
        }
        let nested = depth > 0;
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
                input = self.braced(r, out, depth)?;
            } else {
                let len = name_len(after);
                if len == 0 {
                    return Err(format!(
                        "invalid interpolation at \"{}\": use \"$$\" for a literal \"$\"",
                        truncate(&input[i..])
                    ));
                }
                let v = self.value(&after[..len], true);
                out.push_str(&v);
                input = &after[len..];
            }
        }
    }

    /// Handle the inside of `${...}`; `input` starts right after `{`.
    fn braced<'a>(
        &mut self,
        input: &'a str,
        out: &mut String,
        depth: usize,
    ) -> Result<&'a str, String> {
        let len = name_len(input);
        if len == 0 {
            return Err(format!(
                "invalid interpolation \"${{{}\": expected a variable name",
                truncate(input)
            ));
        }
        let name = &input[..len];
        let rest = &input[len..];
        let value = self.vars.get(name);
        let set_and_nonempty = value.is_some_and(|v| !v.is_empty());
        if let Some(r) = rest.strip_prefix('}') {
            let v = self.value(name, true);
            out.push_str(&v);
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
        // The word after the operator may hold variables itself; it is always parsed, to find
        // the closing brace, but what it notes counts only when the word is used.
        let mut word = String::new();
        let (mut unset, mut blank) = (Vec::new(), Vec::new());
        let after = Expand {
            vars: self.vars,
            unset: &mut unset,
            blank: &mut blank,
        }
        .expand(r, &mut word, depth + 1)?;
        let mut use_word = |this: &mut Self, out: &mut String| {
            this.unset.append(&mut unset);
            this.blank.append(&mut blank);
            out.push_str(&word);
        };
        match op {
            ":-" if set_and_nonempty => out.push_str(value.unwrap_or_default()),
            ":-" => use_word(self, out),
            "-" => match value {
                Some(v) => {
                    if v.is_empty() {
                        self.blank.push(name.to_string());
                    }
                    out.push_str(v)
                }
                None => use_word(self, out),
            },
            ":+" if set_and_nonempty => use_word(self, out),
            "+" if value.is_some() => use_word(self, out),
            ":+" | "+" => {}
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
    fn unset_variables_without_a_default_are_noted_once_with_defaults_silent() {
        let t = interpolate_traced("${MISSING}-$MISSING-${OTHER:-x}-${NONE-}", &vars()).unwrap();
        assert_eq!(t.text, "--x-");
        assert_eq!(t.unset, ["MISSING"]);
        let t = interpolate_traced("${EMPTY}", &vars()).unwrap();
        assert!(t.unset.is_empty(), "set but empty is not unset");
        assert_eq!(t.blank, ["EMPTY"]);
    }

    #[test]
    fn nesting_is_bounded_by_an_error_not_the_stack() {
        let ok = "${A:-".repeat(MAX_NESTING) + "x" + &"}".repeat(MAX_NESTING);
        assert_eq!(i(&ok).unwrap(), "x");
        let deep = "${A:-".repeat(50_000) + "x" + &"}".repeat(50_000);
        assert!(i(&deep).unwrap_err().contains("nested more than 32 deep"));
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
