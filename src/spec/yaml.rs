//! A YAML tree that remembers where every node came from.
//!
//! serde_yaml-style `Value`s forget positions, but every error we report must name the line and
//! column. So the file is read from yaml-rust2's event stream into [`Node`]s that carry a
//! [`Span`], with anchors and aliases resolved and merge keys (`<<`) applied as YAML 1.1 (and
//! Compose) define them. Scalars keep their source text and style; typing happens later
//! ([`Node::to_json`]), after interpolation.

use std::collections::{HashMap, HashSet};
use std::fmt;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deeper nesting than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 128;
/// Alias expansion is capped so that a "billion laughs" file is an error, not an OOM: by
/// nodes, and by the bytes the aliases repeat (one alias of a 1 MB scalar is one node).
const MAX_NODES: usize = 1_000_000;
pub const MAX_ALIAS_BYTES: usize = 2 << 20;
/// A stack file larger than this is refused before it is parsed.
pub const MAX_FILE_BYTES: usize = 4 << 20;

/// A 1-based line and column in a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl From<Marker> for Span {
    fn from(m: Marker) -> Self {
        Span {
            line: m.line() as u32,
            col: m.col() as u32 + 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub text: String,
    /// Plain scalars are typed by their text (`3` is a number); quoted ones are strings.
    pub plain: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

/// A syntax error, with where it happened.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntaxError {
    pub span: Span,
    /// Where in the tree (map keys and list indexes) for errors found in a readable tree;
    /// empty when the parser itself stopped.
    pub path: Vec<String>,
    pub message: String,
}

impl SyntaxError {
    fn new(span: Span, message: impl Into<String>) -> Self {
        SyntaxError {
            span,
            path: Vec::new(),
            message: message.into(),
        }
    }
}

impl Node {
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => Some(&s.text),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
    }

    /// The node at a path of map keys and list indexes, if there is one.
    pub fn at<S: AsRef<str>>(&self, path: &[S]) -> Option<&Node> {
        path.iter().try_fold(self, |node, seg| match &node.value {
            Value::Map(_) => node.get(seg.as_ref()),
            Value::Seq(items) => items.get(seg.as_ref().parse::<usize>().ok()?),
            Value::Scalar(_) => None,
        })
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if s.plain && is_null_text(&s.text))
    }

    /// Find the node at a path of map keys and sequence indexes. Returns the deepest node
    /// reached, and for a map key the span of the key itself (errors about a key point at it).
    pub fn locate<'a, I, S>(&self, path: I) -> Span
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str> + 'a,
    {
        let mut node = self;
        let mut span = self.span;
        for seg in path {
            let seg = seg.as_ref();
            match &node.value {
                Value::Map(entries) => match entries.iter().find(|e| e.key == seg) {
                    Some(e) => {
                        node = &e.value;
                        // A null value has the position of whatever follows; the key is better.
                        span = if e.value.is_null() {
                            e.key_span
                        } else {
                            e.value.span
                        };
                    }
                    None => return span,
                },
                Value::Seq(items) => match seg.parse::<usize>().ok().and_then(|i| items.get(i)) {
                    Some(item) => {
                        node = item;
                        span = item.span;
                    }
                    None => return span,
                },
                Value::Scalar(_) => return span,
            }
        }
        span
    }

    /// The span of a map key at `path` (the last segment being the key), if present.
    pub fn key_span<S: AsRef<str>>(&self, path: &[S]) -> Option<Span> {
        let (last, parent) = path.split_last()?;
        let mut node = self;
        for seg in parent {
            node = match &node.value {
                Value::Map(entries) => &entries.iter().find(|e| e.key == seg.as_ref())?.value,
                Value::Seq(items) => items.get(seg.as_ref().parse::<usize>().ok()?)?,
                Value::Scalar(_) => return None,
            };
        }
        node.as_map()?
            .iter()
            .find(|e| e.key == last.as_ref())
            .map(|e| e.key_span)
    }

    /// Convert to JSON, typing plain scalars the way Compose files are read in practice:
    /// YAML 1.2 core types (`true`, `3`, `1.5`, `null`, `0x1F`, `0o400`) plus YAML 1.1 octal
    /// (`0400`), which is how file modes are written in real stack files.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Scalar(s) if s.plain => plain_scalar_to_json(&s.text),
            Value::Scalar(s) => J::String(s.text.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
}

fn is_null_text(t: &str) -> bool {
    matches!(t, "" | "~" | "null" | "Null" | "NULL")
}

pub fn plain_scalar_to_json(t: &str) -> serde_json::Value {
    use serde_json::Value as J;
    if is_null_text(t) {
        return J::Null;
    }
    match t {
        "true" | "True" | "TRUE" => return J::Bool(true),
        "false" | "False" | "FALSE" => return J::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_int(t) {
        return n;
    }
    // "0999" is neither YAML 1.1 octal nor a decimal Compose would accept: keep it as text
    // rather than read it as 999.
    if t.len() > 1 && t.starts_with('0') && t.bytes().all(|b| b.is_ascii_digit()) {
        return J::String(t.to_string());
    }
    if looks_like_float(t) {
        if let Ok(f) = t.parse::<f64>() {
            if let Some(n) = serde_json::Number::from_f64(f) {
                return J::Number(n);
            }
        }
    }
    J::String(t.to_string())
}

fn parse_int(t: &str) -> Option<serde_json::Value> {
    let (neg, digits) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() {
        return None;
    }
    let magnitude: u64 = if let Some(hex) = digits.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        u64::from_str_radix(oct, 8).ok()?
    } else if digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        // YAML 1.1 octal: `mode: 0440`.
        u64::from_str_radix(&digits[1..], 8).ok()?
    } else if digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if neg {
        let v = i64::try_from(magnitude).ok()?.checked_neg()?;
        serde_json::Value::from(v)
    } else {
        serde_json::Value::from(magnitude)
    })
}

fn looks_like_float(t: &str) -> bool {
    let body = t.trim_start_matches(['-', '+']);
    !body.is_empty()
        && body.bytes().any(|b| b.is_ascii_digit())
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && body.bytes().filter(|&b| b == b'.').count() <= 1
}

/// A parsed document, with the errors that did not stop the reading (duplicate keys, bad merge
/// keys): those are reported together with every other error of the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub root: Node,
    pub errors: Vec<SyntaxError>,
    /// The document holds nothing but comments and whitespace.
    pub empty: bool,
    /// Values of duplicate keys, left out of the tree (and reported in `errors`).
    pub dropped: Vec<Dropped>,
}

/// The value of a duplicate key, which the tree leaves out.
#[derive(Clone, Debug, PartialEq)]
pub struct Dropped {
    /// Where the duplicate key is: map keys and list indexes from the root.
    pub path: Vec<String>,
    /// The keys of the dropped value, if it was a mapping (what it would have defined).
    pub keys: Vec<String>,
}

/// Parse a single YAML document into a [`Node`]. An empty document is an empty map. Errors that
/// leave the tree readable are returned in [`Parsed::errors`]; only what stops the parser is an
/// `Err`.
pub fn parse_document(text: &str) -> Result<Parsed, SyntaxError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(SyntaxError::new(
            Span { line: 1, col: 1 },
            format!(
                "the file is {} bytes; stack files are at most {} MiB",
                text.len(),
                MAX_FILE_BYTES >> 20
            ),
        ));
    }
    // Editors on Windows write a byte order mark; YAML allows it, yaml-rust2 reads it as text.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // The parser stops at a NUL as if the file ended there: everything after it would be
    // silently lost. YAML allows no control characters but tab and line breaks.
    if let Some(e) = control_character(text) {
        return Err(e);
    }
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        text,
        line_starts: std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect(),
        anchors: HashMap::new(),
        nodes: 0,
        alias_bytes: 0,
        open_flows: Vec::new(),
        errors: Vec::new(),
        dropped: Vec::new(),
        path: Vec::new(),
    };
    let (root, empty) = builder.document()?;
    Ok(Parsed {
        root,
        errors: builder.errors,
        empty,
        dropped: builder.dropped,
    })
}

/// Parse a single YAML document, failing on the first error of any kind.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let parsed = parse_document(text)?;
    match parsed.errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(parsed.root),
    }
}

/// The first character YAML does not allow in a document (C0 and C1 controls other than tab,
/// line feed, carriage return and NEL; DEL), with where it is.
fn control_character(text: &str) -> Option<SyntaxError> {
    let (i, c) = text.char_indices().find(|(_, c)| {
        let c = *c as u32;
        (c < 0x20 && !matches!(c, 0x09 | 0x0A | 0x0D))
            || c == 0x7F
            || ((0x80..=0x9F).contains(&c) && c != 0x85)
    })?;
    let before = &text[..i];
    let line = before.matches('\n').count() as u32 + 1;
    let col = before[before.rfind('\n').map_or(0, |n| n + 1)..]
        .chars()
        .count() as u32
        + 1;
    let name = if c == '\0' {
        "a NUL byte".to_string()
    } else {
        format!("the control character U+{:04X}", c as u32)
    };
    Some(SyntaxError::new(
        Span { line, col },
        format!("{name}: a stack file is text, and YAML allows no control characters but tabs and line breaks"),
    ))
}

struct Builder<'a> {
    parser: Parser<std::str::Chars<'a>>,
    text: &'a str,
    /// Where each line starts in `text`, to find a position's character quickly.
    line_starts: Vec<usize>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    /// Bytes of text (scalars and keys) that aliases repeated so far.
    alias_bytes: usize,
    /// Flow collections (`[` or `{`) being read, innermost last: a syntax error inside one is
    /// most often a missing closing bracket, and saying where it opened is the useful part.
    open_flows: Vec<(Span, char)>,
    errors: Vec<SyntaxError>,
    dropped: Vec<Dropped>,
    /// Where the builder is: map keys and list indexes from the root.
    path: Vec<String>,
}

impl Builder<'_> {
    fn next(&mut self) -> Result<(Event, Span), SyntaxError> {
        match self.parser.next_token() {
            Ok((ev, mark)) => Ok((ev, Span::from(mark))),
            Err(e) => Err(self.explain(Span::from(*e.marker()), e.info())),
        }
    }

    /// The text of a 1-based line, without its line break ("" past the end).
    fn line(&self, line: u32) -> &str {
        let Some(&start) = (line as usize)
            .checked_sub(1)
            .and_then(|i| self.line_starts.get(i))
        else {
            return "";
        };
        let rest = &self.text[start..];
        rest[..rest.find('\n').unwrap_or(rest.len())].trim_end_matches('\r')
    }

    /// The character at a position, if the position is inside the text.
    fn char_at(&self, span: Span) -> Option<char> {
        self.line(span.line)
            .chars()
            .nth(span.col.checked_sub(1)? as usize)
    }

    /// Turn yaml-rust2's (libyaml's) terse messages into what a person can act on.
    fn explain(&self, mut span: Span, info: &str) -> SyntaxError {
        let line_text = self.line(span.line);
        let indent_col = line_text.len() - line_text.trim_start_matches(' ').len() + 1;
        let message = if info.contains("recursion limit") {
            // The scanner's own limit on open "[" and "{" (255), met before ours.
            format!("nesting deeper than {MAX_DEPTH} levels")
        } else if info.contains("tab") {
            if let Some(i) = line_text.find('\t') {
                span.col = line_text[..i].chars().count() as u32 + 1;
            }
            "a tab character: YAML indentation must use spaces".to_string()
        } else if let Some(&(open, bracket)) = self.open_flows.last() {
            let (close, what) = if bracket == '[' {
                (']', "list")
            } else {
                ('}', "mapping")
            };
            if open.line == span.line {
                let found = self
                    .char_at(span)
                    .map_or("the end of the line".to_string(), |c| format!("{c:?}"));
                format!(
                    "expected \",\" or \"{close}\" in the {what} opened at column {}, found {found}",
                    open.col
                )
            } else {
                format!(
                    "the \"{bracket}\" opened at line {}, column {} is never closed: expected \"{close}\" before this",
                    open.line, open.col
                )
            }
        } else if info.contains("quoted scalar") {
            "a quoted string that is not closed: add the closing quote".to_string()
        } else if info.contains("did not find expected key") {
            span.col = indent_col as u32;
            "this line is not aligned with the keys above it: check its indentation".to_string()
        } else if info.contains("mapping values are not allowed") {
            "unexpected \":\": the line is indented under a key that already has a value; check \
             the indentation, or quote a value that holds \": \""
                .to_string()
        } else if info.contains("expected '-' indicator") {
            span.col = indent_col as u32;
            "expected a list item (\"- ...\") like the lines above it: a list cannot also hold \
             key: value lines"
                .to_string()
        } else if info.contains("unknown anchor") {
            let name: String = line_text
                .chars()
                .skip(span.col as usize)
                .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | ']' | '}'))
                .collect();
            let known = anchor_names(self.text);
            let known: Vec<&str> = known.iter().map(String::as_str).collect();
            let hint = match super::schema::closest(&name, &known) {
                Some(k) => format!("; did you mean *{k}?"),
                None => " (define it with &name before using it)".to_string(),
            };
            format!("alias *{name} refers to an anchor that is not defined above it{hint}")
        } else {
            info.to_string()
        };
        SyntaxError::new(span, message)
    }

    fn document(&mut self) -> Result<(Node, bool), SyntaxError> {
        let empty = |span| Node {
            value: Value::Map(Vec::new()),
            span,
        };
        loop {
            let (ev, span) = self.next()?;
            match ev {
                Event::StreamStart | Event::DocumentStart | Event::Nothing => continue,
                Event::StreamEnd | Event::DocumentEnd => return Ok((empty(span), true)),
                ev => {
                    let node = self.node(ev, span, 0)?;
                    self.expect_single_document()?;
                    let is_null = node.is_null();
                    return Ok((if is_null { empty(node.span) } else { node }, is_null));
                }
            }
        }
    }
    fn expect_single_document(&mut self) -> Result<(), SyntaxError> {
        loop {
            let (ev, span) = self.next()?;
            match ev {
                Event::DocumentEnd | Event::Nothing => continue,
                Event::StreamEnd => return Ok(()),
                _ => {
                    return Err(SyntaxError::new(
                        span,
                        "a stack file holds one YAML document; found a second one",
                    ))
                }
            }
        }
    }

    fn count(&mut self, span: Span) -> Result<(), SyntaxError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(SyntaxError::new(
                span,
                format!("document expands to more than {MAX_NODES} nodes (alias bomb?)"),
            ));
        }
        Ok(())
    }

    fn node(&mut self, ev: Event, span: Span, depth: usize) -> Result<Node, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(SyntaxError::new(
                span,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.count(span)?;
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, _tag) => (
                Node {
                    value: Value::Scalar(Scalar {
                        text,
                        plain: style == TScalarStyle::Plain,
                    }),
                    span,
                },
                anchor,
            ),
            Event::Alias(id) => {
                let target = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or(SyntaxError::new(span, "alias refers to an unknown anchor"))?;
                self.count_tree(&target, span)?;
                // The alias stands where it is used, but errors inside point at the anchor.
                return Ok(target);
            }
            Event::SequenceStart(anchor, _) => {
                let flow = self.enter(span);
                let mut items = Vec::new();
                loop {
                    let (ev, s) = self.next()?;
                    if ev == Event::SequenceEnd {
                        break;
                    }
                    self.path.push(items.len().to_string());
                    let item = self.node(ev, s, depth + 1);
                    self.path.pop();
                    items.push(item?);
                }
                self.leave(flow);
                (
                    Node {
                        value: Value::Seq(items),
                        span,
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                let flow = self.enter(span);
                let map = self.mapping(span, depth)?;
                self.leave(flow);
                (map, anchor)
            }
            other => {
                return Err(SyntaxError::new(
                    span,
                    format!("unexpected YAML event {other:?}"),
                ))
            }
        };
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    /// Note a collection starting at `span`: flow collections (`[`, `{`) are remembered until
    /// they close.
    fn enter(&mut self, span: Span) -> bool {
        match self.char_at(span) {
            Some(c @ ('[' | '{')) => {
                self.open_flows.push((span, c));
                true
            }
            _ => false,
        }
    }

    fn leave(&mut self, flow: bool) {
        if flow {
            self.open_flows.pop();
        }
    }

    fn count_tree(&mut self, node: &Node, span: Span) -> Result<(), SyntaxError> {
        self.count(span)?;
        match &node.value {
            Value::Scalar(s) => self.count_alias_bytes(s.text.len(), span),
            Value::Seq(items) => items.iter().try_for_each(|n| self.count_tree(n, span)),
            Value::Map(entries) => entries.iter().try_for_each(|e| {
                self.count_alias_bytes(e.key.len(), span)?;
                self.count_tree(&e.value, span)
            }),
        }
    }

    fn count_alias_bytes(&mut self, n: usize, span: Span) -> Result<(), SyntaxError> {
        self.alias_bytes += n;
        if self.alias_bytes > MAX_ALIAS_BYTES {
            return Err(SyntaxError::new(
                span,
                format!(
                    "aliases repeat more than {} MiB of text (alias bomb?): aliases may expand a file by at most that much",
                    MAX_ALIAS_BYTES >> 20
                ),
            ));
        }
        Ok(())
    }

    fn mapping(&mut self, span: Span, depth: usize) -> Result<Node, SyntaxError> {
        let mut entries: Vec<Entry> = Vec::new();
        // Where each key is in `entries`: duplicate keys are found in constant time, so a
        // mapping of 100,000 keys costs what its size says, not its square.
        let mut index: HashMap<String, usize> = HashMap::new();
        // Merged entries are kept apart: explicit keys win over merged ones wherever they are.
        let mut merged: Vec<Entry> = Vec::new();
        let mut merged_keys: HashSet<String> = HashSet::new();
        loop {
            let (ev, key_span) = self.next()?;
            if ev == Event::MappingEnd {
                break;
            }
            let key_node = self.node(ev, key_span, depth + 1)?;
            let key = match key_node.value {
                Value::Scalar(s) => s.text,
                _ => {
                    return Err(SyntaxError::new(
                        key_span,
                        "mapping keys must be plain strings",
                    ))
                }
            };
            let (ev, vspan) = self.next()?;
            self.path.push(key);
            let value = self.node(ev, vspan, depth + 1);
            let key = self.path.pop().expect("pushed above");
            let value = value?;
            // The path of this entry, for errors about it.
            let here = |b: &Self| [b.path.as_slice(), std::slice::from_ref(&key)].concat();
            if key == "<<" {
                // `vspan` is where the merge is written; an alias's own span is its anchor's.
                if let Err(mut e) = merge_into(&mut merged, &mut merged_keys, value, vspan) {
                    e.path = here(self);
                    self.errors.push(e);
                }
                continue;
            }
            // Compose refuses duplicate keys; report each one and keep reading with the first
            // value, so that the rest of the file is still checked. What the second value
            // defines is named, so that nothing it held is lost without a word.
            if let Some(&first) = index.get(&key) {
                let prev = &entries[first];
                let path = here(self);
                let defined: Vec<String> = value
                    .as_map()
                    .map(|m| m.iter().map(|e| e.key.clone()).collect())
                    .unwrap_or_default();
                let ignored = match defined.len() {
                    0 => "this value is ignored".to_string(),
                    _ => format!(
                        "this block is ignored, with what it defines ({}): merge it into the first",
                        list_some(&defined)
                    ),
                };
                self.errors.push(SyntaxError {
                    span: key_span,
                    path: path.clone(),
                    message: format!(
                        "duplicate key {key:?}: first defined at line {}, column {}; {ignored}",
                        prev.key_span.line, prev.key_span.col
                    ),
                });
                self.dropped.push(Dropped {
                    path,
                    keys: defined,
                });
                continue;
            }
            index.insert(key.clone(), entries.len());
            entries.push(Entry {
                key,
                key_span,
                value,
            });
        }
        for m in merged {
            if !index.contains_key(&m.key) {
                entries.push(m);
            }
        }
        // A block mapping's start event is reported after its first key; the key is where the
        // mapping visibly starts.
        let span = entries.first().map_or(span, |e| span.min(e.key_span));
        Ok(Node {
            value: Value::Map(entries),
            span,
        })
    }
}

/// Up to five names, then how many more.
fn list_some(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    match names.len() {
        n if n > 5 => format!("{} and {} more", shown.join(", "), n - 5),
        _ => shown.join(", "),
    }
}

/// The anchor names (`&name`) written in a text, to suggest one for a mistyped alias.
fn anchor_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (i, _) in text.match_indices('&') {
        let name: String = text[i + 1..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | '[' | ']' | '{' | '}'))
            .collect();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Apply a `<<` value (one map, or a list of maps; earlier maps win) to the merged set. Errors
/// point at `at`, where the merge is written.
fn merge_into(
    merged: &mut Vec<Entry>,
    keys: &mut HashSet<String>,
    value: Node,
    at: Span,
) -> Result<(), SyntaxError> {
    let wrong = |what: &str| {
        SyntaxError::new(
            at,
            format!("merge key `<<` takes a mapping or a list of mappings, found {what}"),
        )
    };
    let sources = match value.value {
        Value::Map(m) => vec![m],
        Value::Seq(items) => items
            .into_iter()
            .map(|n| match n.value {
                Value::Map(m) => Ok(m),
                Value::Seq(_) => Err(wrong("a list holding a list")),
                Value::Scalar(s) => Err(wrong(&format!("a list holding {:?}", s.text))),
            })
            .collect::<Result<_, _>>()?,
        Value::Scalar(s) => return Err(wrong(&format!("{:?}", s.text))),
    };
    for source in sources {
        for entry in source {
            if keys.insert(entry.key.clone()) {
                merged.push(entry);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spans_are_one_based_and_point_at_values() {
        let n = parse("services:\n  web:\n    image: nginx\n").unwrap();
        assert_eq!(
            n.locate(["services", "web", "image"]),
            Span { line: 3, col: 12 }
        );
        assert_eq!(
            n.key_span(&["services", "web"]),
            Some(Span { line: 2, col: 3 })
        );
    }

    #[test]
    fn merge_keys_apply_with_explicit_keys_winning() {
        let n = parse("x-base: &base\n  image: a\n  user: root\nweb:\n  <<: *base\n  image: b\n")
            .unwrap();
        assert_eq!(
            n.get("web").unwrap().to_json(),
            json!({"image": "b", "user": "root"})
        );
    }

    #[test]
    fn merge_list_earlier_map_wins() {
        let n = parse("a: &a {k: 1}\nb: &b {k: 2, j: 3}\nc:\n  <<: [*a, *b]\n").unwrap();
        assert_eq!(n.get("c").unwrap().to_json(), json!({"k": 1, "j": 3}));
    }

    #[test]
    fn scalars_are_typed_like_compose_files_expect() {
        let n = parse(
            "a: 3\nb: '3'\nc: 0400\nd: 1.5\ne: true\nf: yes\ng:\nh: 0o17\ni: 1e3\nj: 1.2.3\n",
        )
        .unwrap();
        assert_eq!(
            n.to_json(),
            json!({"a": 3, "b": "3", "c": 256, "d": 1.5, "e": true, "f": "yes", "g": null,
                   "h": 15, "i": 1000.0, "j": "1.2.3"})
        );
    }

    #[test]
    fn duplicate_keys_are_errors_naming_both_lines() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.span.line, 3);
        assert!(
            e.message.contains("first defined at line 1"),
            "{}",
            e.message
        );
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_refused() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse(&bomb).unwrap_err().message.contains("alias bomb"));
        let deep = "[".repeat(500) + &"]".repeat(500);
        let e = parse(&deep).unwrap_err();
        assert!(
            e.message.contains("nesting") || e.message.contains("recursion"),
            "{e:?}"
        );
    }

    #[test]
    fn control_characters_are_refused_where_they_are() {
        let e = parse("a: 1\nb: x\u{7}y\n").unwrap_err();
        assert_eq!(e.span.line, 2, "{e:?}");
        assert!(e.message.contains("U+0007"), "{e:?}");
        let e = parse("a: 1\n\0b: 2\n").unwrap_err();
        assert!(e.message.contains("a NUL byte"), "{e:?}");
        // Tabs and line breaks are text.
        assert!(parse("a: \"x\ty\"\r\nb: 2\r\n").is_ok());
    }

    #[test]
    fn aliases_are_counted_by_the_bytes_they_repeat() {
        // Twenty aliases of one 200 KB scalar: few nodes, 4 MB of text once expanded.
        let big = "x".repeat(200_000);
        let mut text = format!("big: &big {big}\nlist:\n");
        for _ in 0..20 {
            text.push_str("  - *big\n");
        }
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("alias bomb"), "{e:?}");
        // A few small aliases, as real files have, are fine.
        let ok = "x-env: &env {A: \"1\"}\nservices:\n  a: {environment: *env}\n  b: {environment: *env}\n";
        assert!(parse(ok).is_ok());
    }

    #[test]
    fn a_very_large_mapping_is_read_in_linear_time() {
        // 200,000 keys: the quadratic duplicate check this replaced took minutes here.
        let mut text = String::from("m:\n");
        for i in 0..200_000 {
            text.push_str(&format!("  k{i}: {i}\n"));
        }
        let started = std::time::Instant::now();
        let root = parse(&text).expect("a large but valid mapping");
        // Generous for a debug build on a busy machine; a quadratic check takes minutes.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{:?} for 200,000 keys",
            started.elapsed()
        );
        assert_eq!(
            root.get("m").and_then(Node::as_map).map(<[Entry]>::len),
            Some(200_000)
        );
        text.push_str("  k7: again\n");
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("k7"), "{e:?}");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("services:\n  web:\n    image: [a\n").unwrap_err();
        assert!(e.span.line >= 3, "{e:?}");
    }

    #[test]
    fn empty_document_is_an_empty_map() {
        assert_eq!(parse("").unwrap().to_json(), json!({}));
        assert_eq!(parse("# just a comment\n").unwrap().to_json(), json!({}));
    }

    #[test]
    fn recoverable_errors_are_all_collected_with_their_paths() {
        let p = parse_document("a:\n  b: 1\n  b: 2\nc: 1\nc: 2\nd:\n  <<: 3\n").unwrap();
        let found: Vec<(u32, String)> = p
            .errors
            .iter()
            .map(|e| (e.span.line, e.path.join(".")))
            .collect();
        assert_eq!(
            found,
            [(3, "a.b".into()), (5, "c".into()), (7, "d.<<".into())]
        );
        // The first value stays, so the rest of the file can still be checked.
        assert_eq!(p.root.to_json()["a"], json!({"b": 1}));
    }

    #[test]
    fn a_merge_error_points_at_the_merge_not_the_anchor() {
        let e = parse("x: &s text\ny:\n  <<: *s\n").unwrap_err();
        assert_eq!((e.span.line, e.span.col), (3, 7), "{e:?}");
    }

    #[test]
    fn block_mappings_start_at_their_first_key() {
        let n = parse("list:\n  - name: a\n    x: 1\n").unwrap();
        assert_eq!(n.locate(["list", "0"]), Span { line: 2, col: 5 });
    }

    #[test]
    fn a_byte_order_mark_is_not_content() {
        let n = parse("\u{feff}# comment\nservices: {}\n").unwrap();
        assert_eq!(n.to_json(), json!({"services": {}}));
    }

    #[test]
    fn syntax_errors_say_what_to_fix() {
        let e = parse("a:\n  b: [1, 2\nc: 3\n").unwrap_err();
        assert!(
            e.message
                .contains("\"[\" opened at line 2, column 6 is never closed"),
            "{e:?}"
        );
        let e = parse("a:\n\tb: 1\n").unwrap_err();
        assert_eq!((e.span.line, e.span.col), (2, 1));
        assert!(e.message.contains("tab"), "{e:?}");
        let e = parse("x: &base {a: 1}\ny: *bsae\n").unwrap_err();
        assert!(e.message.contains("did you mean *base?"), "{e:?}");
        let e = parse("a: \"open\nb: 1\n").unwrap_err();
        assert!(e.message.contains("closing quote"), "{e:?}");
    }

    #[test]
    fn leading_zero_digits_that_are_not_octal_stay_text() {
        assert_eq!(plain_scalar_to_json("0999"), json!("0999"));
        assert_eq!(plain_scalar_to_json("0440"), json!(288));
        assert_eq!(plain_scalar_to_json("0"), json!(0));
    }
}
