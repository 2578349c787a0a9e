//! `--format` as docker takes it: a Go template per row (`'{{.Name}}\t{{.Image}}'`, through
//! gtmpl, the Go template engine for Rust), `table TEMPLATE` for aligned columns under a
//! header, `json` for one JSON object a row, and `{{json .}}` inside a template.
//!
//! Each listing gives its rows as the fields docker names for the same objects, in order.

use std::collections::HashMap;

use gtmpl::{Context, FuncError, Template, Value};

/// One row: docker's field names and their values, in the order of the default table.
pub type Row = Vec<(&'static str, String)>;

/// A parsed `--format`.
pub struct Format {
    kind: Kind,
    /// The fields the listing has (for the message naming an unknown one).
    fields: Vec<&'static str>,
}

enum Kind {
    Json,
    Lines(Template),
    Table(Template),
}

/// docker's header for a field: `DesiredState` → `DESIRED STATE`, `ID` → `ID`.
fn header(field: &str) -> String {
    let mut out = String::new();
    let mut lower_before = false;
    for c in field.chars() {
        if c.is_uppercase() && lower_before {
            out.push(' ');
        }
        lower_before = c.is_lowercase();
        out.extend(c.to_uppercase());
    }
    out
}

/// `{{json .}}`: the value as JSON.
fn json(args: &[Value]) -> Result<Value, FuncError> {
    fn to_json(v: &Value) -> serde_json::Value {
        match v {
            Value::Object(m) | Value::Map(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
            }
            Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => serde_json::from_str(&n.to_string()).unwrap_or_default(),
            _ => serde_json::Value::Null,
        }
    }
    let v = args
        .first()
        .ok_or(FuncError::AtLeastXArgs("json".into(), 1))?;
    Ok(Value::String(to_json(v).to_string()))
}

impl Format {
    /// Parse `text` for a listing whose rows have `fields`.
    pub fn parse(text: &str, fields: &[&'static str]) -> anyhow::Result<Format> {
        let fields = fields.to_vec();
        let compile = |t: &str| -> anyhow::Result<Template> {
            let mut tmpl = Template::default();
            tmpl.add_func("json", json);
            // Go templates take `\t` from the shell as the two characters docker turns into
            // a tab.
            tmpl.parse(t.replace("\\t", "\t").replace("\\n", "\n"))
                .map_err(|e| anyhow::anyhow!("--format {t:?}: {e}"))?;
            Ok(tmpl)
        };
        let kind = match text.trim() {
            "json" => Kind::Json,
            t => match t.strip_prefix("table") {
                Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                    let rest = rest.trim_start();
                    let default: String = fields
                        .iter()
                        .map(|f| format!("{{{{.{f}}}}}"))
                        .collect::<Vec<_>>()
                        .join("\t");
                    Kind::Table(compile(if rest.is_empty() { &default } else { rest })?)
                }
                _ => Kind::Lines(compile(text)?),
            },
        };
        let format = Format { kind, fields };
        // An unknown field fails here, with the fields there are, not halfway through output.
        let probe: Row = format.fields.iter().map(|f| (*f, String::new())).collect();
        format.render_row(&probe)?;
        Ok(format)
    }

    fn render_row(&self, row: &Row) -> anyhow::Result<String> {
        let tmpl = match &self.kind {
            Kind::Json => {
                let object: serde_json::Map<String, serde_json::Value> = row
                    .iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
                    .collect();
                return Ok(serde_json::Value::Object(object).to_string());
            }
            Kind::Lines(t) | Kind::Table(t) => t,
        };
        let object: HashMap<String, Value> = row
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect();
        tmpl.render(&Context::from(Value::Object(object)))
            .map_err(|e| {
                anyhow::anyhow!(
                    "--format: {e} (the fields here are {})",
                    self.fields
                        .iter()
                        .map(|f| format!(".{f}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    /// The rows, rendered: one a line, or aligned columns under their headers (`table`).
    pub fn render(&self, rows: &[Row]) -> anyhow::Result<String> {
        let mut lines = Vec::new();
        if let Kind::Table(_) = self.kind {
            let headers: Row = self.fields.iter().map(|f| (*f, header(f))).collect();
            lines.push(self.render_row(&headers)?);
        }
        for row in rows {
            lines.push(self.render_row(row)?);
        }
        if !matches!(self.kind, Kind::Table(_)) {
            return Ok(lines.iter().map(|l| format!("{l}\n")).collect());
        }
        // Columns as docker's tabwriter lays them: each as wide as its widest cell, 3 apart.
        let cells: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
        let mut widths: Vec<usize> = Vec::new();
        for row in &cells {
            for (i, c) in row.iter().enumerate() {
                let w = c.chars().count();
                match widths.get_mut(i) {
                    Some(x) => *x = (*x).max(w),
                    None => widths.push(w),
                }
            }
        }
        let mut out = String::new();
        for row in &cells {
            let mut line = String::new();
            for (i, c) in row.iter().enumerate() {
                line.push_str(c);
                if i + 1 < row.len() {
                    let pad = widths[i] - c.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row> {
        vec![
            vec![
                ("Name", "web_app".into()),
                ("Image", "nginx:1".into()),
                ("DesiredState", "Running".into()),
            ],
            vec![
                ("Name", "db".into()),
                ("Image", "postgres:16".into()),
                ("DesiredState", "Shutdown".into()),
            ],
        ]
    }

    const FIELDS: &[&str] = &["Name", "Image", "DesiredState"];

    #[test]
    fn headers_are_dockers() {
        assert_eq!(header("DesiredState"), "DESIRED STATE");
        assert_eq!(header("ID"), "ID");
        assert_eq!(header("Name"), "NAME");
    }

    #[test]
    fn a_template_a_row_a_line() {
        let f = Format::parse("{{.Name}}: {{.Image}}", FIELDS).unwrap();
        assert_eq!(
            f.render(&rows()).unwrap(),
            "web_app: nginx:1\ndb: postgres:16\n"
        );
    }

    #[test]
    fn table_aligns_columns_under_docker_headers() {
        let f = Format::parse("table {{.Name}}\\t{{.DesiredState}}", FIELDS).unwrap();
        assert_eq!(
            f.render(&rows()).unwrap(),
            "NAME      DESIRED STATE\nweb_app   Running\ndb        Shutdown\n"
        );
        let all = Format::parse("table", FIELDS)
            .unwrap()
            .render(&rows())
            .unwrap();
        assert!(
            all.starts_with("NAME      IMAGE         DESIRED STATE\n"),
            "{all}"
        );
    }

    #[test]
    fn json_a_row_an_object_and_json_of_dot_inside_a_template() {
        let f = Format::parse("json", FIELDS).unwrap();
        let first = f
            .render(&rows())
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string();
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(v["Name"], "web_app");
        let f = Format::parse("{{json .}}", FIELDS).unwrap();
        let first = f
            .render(&rows())
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string();
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(v["DesiredState"], "Running");
    }

    #[test]
    fn an_unknown_field_or_a_broken_template_is_refused_naming_the_fields() {
        let e = Format::parse("{{.Nmae}}", FIELDS)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(".Name, .Image, .DesiredState"), "{e}");
        let e = Format::parse("{{.Name", FIELDS).err().unwrap().to_string();
        assert!(e.contains("--format"), "{e}");
    }
}
