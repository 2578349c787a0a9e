//! The JSON Schema of the stack format: generated from the `raw` types with schemars, checked in
//! at `schemas/stack.schema.json`, and used through jsonschema to check every file before it is
//! deserialised, so that all structural errors of a file are reported together.

use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use serde_json::{json, Map, Value};

use super::diagnostic::Report;
use super::ignored;
use super::raw::ComposeFile;

/// Where the checked-in schema lives, relative to the repository root.
pub const SCHEMA_PATH: &str = "schemas/stack.schema.json";
pub const SCHEMA_ID: &str = "https://reconciler.dev/schemas/stack.schema.json";

/// The stack file schema as JSON.
pub fn stack_schema() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<ComposeFile>().to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("$id".into(), json!(SCHEMA_ID));
        let props = obj
            .get_mut("properties")
            .and_then(Value::as_object_mut)
            .expect("root schema has properties");
        add_ignored(props, ignored::TOP_LEVEL_KEYS);
    }
    if let Some(service) = schema
        .pointer_mut("/$defs/Service/properties")
        .and_then(Value::as_object_mut)
    {
        add_ignored(service, ignored::SERVICE_KEYS);
    }
    allow_extensions(&mut schema);
    schema
}

/// The schema as the checked-in file holds it (pretty, with a final newline).
pub fn stack_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&stack_schema()).expect("schema serialises");
    text.push('\n');
    text
}

fn add_ignored(props: &mut Map<String, Value>, table: &[(&str, &str)]) {
    for (key, hint) in table {
        let mut description = "Ignored in swarm mode.".to_string();
        if !hint.is_empty() {
            description.push_str(&format!(" Instead: {hint}."));
        }
        props.insert(
            key.to_string(),
            json!({ "description": description, "deprecated": true }),
        );
    }
}

/// Compose allows `x-` extension fields on every mapping: add them wherever unknown keys are
/// otherwise refused.
fn allow_extensions(v: &mut Value) {
    match v {
        Value::Object(obj) => {
            if obj.get("additionalProperties") == Some(&Value::Bool(false)) {
                obj.insert("patternProperties".into(), json!({ "^x-": {} }));
            }
            obj.values_mut().for_each(allow_extensions);
        }
        Value::Array(items) => items.iter_mut().for_each(allow_extensions),
        _ => {}
    }
}

/// Compile the validator on a thread of its own (once per process): compiling its patterns
/// takes several milliseconds that can overlap with opening the trees and reading the files.
pub fn prepare_in_background() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| {
            validator();
        });
    });
}

fn validator() -> &'static (Value, Validator) {
    static V: OnceLock<(Value, Validator)> = OnceLock::new();
    V.get_or_init(|| {
        let schema = stack_schema();
        let validator = jsonschema::validator_for(&schema).expect("generated schema is valid");
        (schema, validator)
    })
}

/// What the schema check found, for the caller to leave out of the checks that follow.
#[derive(Debug, Default)]
pub struct Findings {
    /// Values of the wrong type or range (and objects missing a required key).
    pub bad_values: Vec<Vec<String>>,
    /// Keys that are not part of the format.
    pub unknown_keys: Vec<Vec<String>>,
    /// The keys that unknown ones were probably meant to be (their "did you mean").
    pub meant: Vec<Vec<String>>,
}

/// Check a document against the schema, adding one diagnostic per problem to the report.
pub fn check(instance: &Value, report: &mut Report<'_>) -> Findings {
    let (schema, validator) = validator();
    let mut seen = Vec::new();
    let mut findings = Findings::default();
    for error in validator.iter_errors(instance) {
        explain(schema, &error, report, &mut seen, &mut findings);
    }
    findings
}

fn pointer_segments(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Turn one jsonschema error into a diagnostic a person can act on.
fn explain(
    schema: &Value,
    error: &ValidationError<'_>,
    report: &mut Report<'_>,
    seen: &mut Vec<(String, String)>,
    findings: &mut Findings,
) {
    let path = pointer_segments(error.instance_path().as_str());
    let subschema = keyword_parent(schema, error.schema_path().as_str());
    let instance = error.instance();
    let mut push = |report: &mut Report<'_>, path: &[String], key: bool, msg: String| {
        let id = (path.join("/"), msg.clone());
        if seen.contains(&id) {
            return;
        }
        seen.push(id);
        if key {
            findings.unknown_keys.push(path.to_vec());
            report.key_error(path, msg);
        } else {
            findings.bad_values.push(path.to_vec());
            report.error(path, msg);
        }
    };
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let known: Vec<&str> = subschema
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object)
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            for key in unexpected {
                let mut p = path.clone();
                p.push(key.clone());
                let mut msg = "unknown key".to_string();
                if let Some(best) = closest(key, &known) {
                    msg.push_str(&format!("; did you mean \"{best}\"?"));
                    let mut meant = path.clone();
                    meant.push(best.to_string());
                    findings.meant.push(meant);
                } else if !known.is_empty() && known.len() <= 12 {
                    msg.push_str(&format!("; expected one of {}", known.join(", ")));
                }
                push(report, &p, true, msg);
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            // `spreed:` already gets "did you mean spread?"; "missing spread" would repeat it.
            let misspelt = instance
                .as_object()
                .is_some_and(|o| o.keys().any(|k| k != name && closest(k, &[name]).is_some()));
            if misspelt {
                findings.bad_values.push(path.clone());
            } else {
                push(
                    report,
                    &path,
                    false,
                    format!("missing required key \"{name}\""),
                );
            }
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            // Report the errors of the alternative that fits the value's shape best; if no
            // alternative even has the right type, say which types would do.
            let best = context
                .iter()
                .filter(|errs| !errs.is_empty())
                .filter(|errs| {
                    !errs.iter().any(|e| {
                        matches!(e.kind(), ValidationErrorKind::Type { .. })
                            && e.instance_path() == error.instance_path()
                    })
                })
                .min_by_key(|errs| errs.len());
            match best {
                Some(errs) => errs
                    .iter()
                    .for_each(|e| explain(schema, e, report, seen, findings)),
                None => {
                    let expected = subschema
                        .map(|s| expected(schema, s))
                        .unwrap_or_else(|| "a different value".into());
                    push(
                        report,
                        &path,
                        false,
                        format!(
                            "expected {expected}, found {}{}",
                            found(instance),
                            missing_space_hint(schema, subschema, instance)
                        ),
                    );
                }
            }
        }
        ValidationErrorKind::AdditionalItems { .. }
        | ValidationErrorKind::Constant { .. }
        | ValidationErrorKind::Enum { .. }
        | ValidationErrorKind::ExclusiveMaximum { .. }
        | ValidationErrorKind::ExclusiveMinimum { .. }
        | ValidationErrorKind::Maximum { .. }
        | ValidationErrorKind::Minimum { .. }
        | ValidationErrorKind::Pattern { .. }
        | ValidationErrorKind::Type { .. }
        | ValidationErrorKind::MinLength { .. }
        | ValidationErrorKind::MaxLength { .. }
        | ValidationErrorKind::Format { .. } => {
            let expected = subschema
                .map(|s| expected(schema, s))
                .unwrap_or_else(|| "a different value".into());
            // `interval: 30` is seconds in the writer's head: say which unit is missing.
            let hint = match (subschema.and_then(|s| s.get("x-unit-hint")), &**instance) {
                (Some(Value::String(unit)), Value::Number(n)) => {
                    format!(" (a number needs a unit: {n}{unit})")
                }
                _ => String::new(),
            };
            push(
                report,
                &path,
                false,
                format!(
                    "expected {expected}, found {}{hint}{}",
                    found(instance),
                    missing_space_hint(schema, subschema, instance)
                ),
            );
        }
        _ => push(report, &path, false, error.to_string()),
    }
}

/// `image:nginx` is the text "image:nginx", not a key and a value: say so when the text
/// before the colon is a key of the mapping that was expected.
fn missing_space_hint(root: &Value, expected: Option<&Value>, instance: &Value) -> &'static str {
    let Some((key, _)) = instance.as_str().and_then(|s| s.split_once(':')) else {
        return "";
    };
    let known = expected.is_some_and(|s| has_property(root, s, key));
    if known {
        " (a key and its value need a space after the \":\")"
    } else {
        ""
    }
}

/// Does the schema (or one of its alternatives) describe a mapping with this key?
fn has_property(root: &Value, s: &Value, key: &str) -> bool {
    let s = resolve(root, s);
    s.get("properties").and_then(|p| p.get(key)).is_some()
        || ["anyOf", "oneOf"].iter().any(|k| {
            s.get(*k)
                .and_then(Value::as_array)
                .is_some_and(|alts| alts.iter().any(|a| has_property(root, a, key)))
        })
}

/// The schema object that holds the keyword at `keyword_location` (a JSON pointer).
fn keyword_parent<'s>(schema: &'s Value, keyword_location: &str) -> Option<&'s Value> {
    let (parent, _) = keyword_location.rsplit_once('/')?;
    schema.pointer(parent)
}

/// Describe what a schema accepts, in words.
fn expected(root: &Value, s: &Value) -> String {
    let s = resolve(root, s);
    if let Some(text) = s.get("x-expected").and_then(Value::as_str) {
        return text.to_string();
    }
    if let Some(options) = s.get("enum").and_then(Value::as_array) {
        let words: Vec<String> = options.iter().map(Value::to_string).collect();
        return format!("one of {}", words.join(", "));
    }
    if let Some(c) = s.get("const") {
        return c.to_string();
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            let mut words: Vec<String> = Vec::new();
            for alt in alts {
                let w = expected(root, alt);
                if w != "nothing" && !words.contains(&w) {
                    words.push(w);
                }
            }
            return join_or(&words);
        }
    }
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let min = s.get("minimum").and_then(Value::as_f64);
    let max = s.get("maximum").and_then(Value::as_f64);
    let words: Vec<String> = types
        .iter()
        .filter(|t| **t != "null")
        .map(|t| match *t {
            "integer" => match (min, max) {
                (Some(lo), Some(hi)) => format!("an integer from {lo} to {hi}"),
                (Some(0.0), None) => "a non-negative integer".into(),
                (Some(lo), None) => format!("an integer of at least {lo}"),
                _ => "an integer".into(),
            },
            "number" => match (min, max) {
                (Some(lo), Some(hi)) => format!("a number from {lo} to {hi}"),
                (Some(0.0), None) => "a non-negative number".into(),
                _ => "a number".into(),
            },
            "string" => "a string".into(),
            "boolean" => "true or false".into(),
            "array" => "a list".into(),
            "object" => "a mapping".into(),
            other => other.to_string(),
        })
        .collect();
    if words.is_empty() {
        if types == ["null"] {
            return "nothing".into();
        }
        return "a different value".into();
    }
    join_or(&words)
}

fn resolve<'s>(root: &'s Value, s: &'s Value) -> &'s Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix('#')
            .and_then(|p| root.pointer(p))
            .map(|t| resolve(root, t))
            .unwrap_or(s),
        None => s,
    }
}

fn join_or(words: &[String]) -> String {
    match words {
        [] => "a different value".into(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Show the value that was found, briefly.
pub fn found(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::String(s) if s.chars().count() > 60 => {
            format!("{:?}", s.chars().take(57).collect::<String>() + "...")
        }
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
        other => other.to_string(),
    }
}

/// The most similar known word, if one is close enough to be a typo.
pub fn closest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(word, k), *k))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}
