//! Typed values for the strings Compose files are full of: durations (`1m30s`, `500ms`), byte
//! sizes (`512M`, `1g`, read as Docker reads them: binary multiples) and CPU counts (`"0.5"`).
//! Each type parses its text once and serialises back to a readable canonical form, so a plan
//! prints `delay 10s -> 30s` rather than nanosecond counts.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A Go-style duration, as Compose writes them: `10s`, `1m30s`, `1.5s`, `500ms`, `2h`, or `0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

pub const DURATION_PATTERN: &str = r"^[+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+)$";

impl Duration {
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    pub fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }

    pub fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim().trim_start_matches('+');
        if t == "0" {
            return Ok(Duration::ZERO);
        }
        let mut total: f64 = 0.0;
        let mut rest = t;
        if rest.is_empty() {
            return Err(duration_expected(text));
        }
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| duration_expected(text))?;
            let number: f64 = rest[..num_len]
                .parse()
                .map_err(|_| duration_expected(text))?;
            rest = &rest[num_len..];
            let (unit, scale) = [
                ("ns", 1e-9),
                ("us", 1e-6),
                ("µs", 1e-6),
                ("ms", 1e-3),
                ("s", 1.0),
                ("m", 60.0),
                ("h", 3600.0),
            ]
            .into_iter()
            // "ms" must win over "m": try two-letter units first by checking the longest match.
            .filter(|(u, _)| rest.starts_with(u))
            .max_by_key(|(u, _)| u.len())
            .ok_or_else(|| duration_expected(text))?;
            rest = &rest[unit.len()..];
            total += number * scale;
        }
        if !total.is_finite() || total > 1e12 {
            return Err(duration_expected(text));
        }
        Ok(Duration(std::time::Duration::from_secs_f64(total)))
    }

    pub fn as_std(self) -> std::time::Duration {
        self.0
    }
}

fn duration_expected(text: &str) -> String {
    format!("expected a duration like 10s, 1m30s or 500ms, found {text:?}")
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        let nanos = d.as_nanos();
        if !nanos.is_multiple_of(1_000_000_000) {
            if nanos.is_multiple_of(1_000_000) {
                return write!(f, "{}ms", nanos / 1_000_000);
            }
            if nanos < 1_000_000 {
                return write!(f, "{}us", nanos as f64 / 1000.0);
            }
            return write!(f, "{}ms", nanos as f64 / 1e6);
        }
        let mut s = d.as_secs();
        let h = s / 3600;
        s %= 3600;
        let m = s / 60;
        s %= 60;
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match &v {
            serde_json::Value::String(s) => Duration::parse(s).map_err(de::Error::custom),
            serde_json::Value::Number(n) if n.as_u64() == Some(0) => Ok(Duration::ZERO),
            other => Err(de::Error::custom(duration_expected(&other.to_string()))),
        }
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration such as 10s, 1m30s, 500ms or 2h (or the number 0).",
            "type": ["string", "integer"],
            "pattern": DURATION_PATTERN,
            "minimum": 0,
            "maximum": 0,
            "x-expected": "a duration like 10s, 1m30s or 500ms",
            "x-unit-hint": "s"
        })
    }
}

/// A size in bytes. Text uses Docker's reading: `512M` and `512MiB` are both 512 × 1024².
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

pub const BYTES_PATTERN: &str = r"^\s*\d+(\.\d+)?\s*([kKmMgGtTpP][iI]?)?[bB]?\s*$";

impl Bytes {
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = || format!("expected a size like 512M, 1g or 1048576, found {text:?}");
        let t = text.trim();
        let num_len = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let number: f64 = t[..num_len].parse().map_err(|_| expected())?;
        let unit = t[num_len..].trim().to_ascii_lowercase();
        let unit = unit.trim_end_matches('b').trim_end_matches('i');
        let scale: u64 = match unit {
            "" => 1,
            "k" => 1 << 10,
            "m" => 1 << 20,
            "g" => 1 << 30,
            "t" => 1 << 40,
            "p" => 1 << 50,
            _ => return Err(expected()),
        };
        let bytes = number * scale as f64;
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(expected());
        }
        Ok(Bytes(bytes as u64))
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 5] = [
            ("PiB", 1 << 50),
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Bytes::parse(&s).map_err(de::Error::custom),
            serde_json::Value::Number(n) => n
                .as_u64()
                .map(Bytes)
                .ok_or_else(|| de::Error::custom(format!("expected a size in bytes, found {n}"))),
            other => Err(de::Error::custom(format!(
                "expected a size like 512M, found {other}"
            ))),
        }
    }
}

impl JsonSchema for Bytes {
    fn schema_name() -> Cow<'static, str> {
        "Bytes".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size in bytes: a number, or text such as 512M, 1g or 100k (binary multiples, as Docker reads them).",
            "type": ["string", "integer"],
            "pattern": BYTES_PATTERN,
            "minimum": 0,
            "x-expected": "a size like 512M, 1g or 1048576"
        })
    }
}

/// A CPU count (`0.5`, `"2"`), kept as nano-CPUs like Docker's API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NanoCpus(pub u64);

pub const CPUS_PATTERN: &str = r"^\s*\d+(\.\d+)?\s*$";

impl NanoCpus {
    pub fn parse(text: &str) -> Result<Self, String> {
        let f: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("expected a number of CPUs like 0.5 or 2, found {text:?}"))?;
        Self::from_f64(f)
    }

    fn from_f64(f: f64) -> Result<Self, String> {
        if !f.is_finite() || !(0.0..=1e6).contains(&f) {
            return Err(format!(
                "expected a number of CPUs like 0.5 or 2, found {f}"
            ));
        }
        Ok(NanoCpus((f * 1e9).round() as u64))
    }
}

impl fmt::Display for NanoCpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0 as f64 / 1e9)
    }
}

impl Serialize for NanoCpus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NanoCpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => NanoCpus::parse(&s).map_err(de::Error::custom),
            serde_json::Value::Number(n) => {
                NanoCpus::from_f64(n.as_f64().unwrap_or(f64::NAN)).map_err(de::Error::custom)
            }
            other => Err(de::Error::custom(format!(
                "expected a number of CPUs, found {other}"
            ))),
        }
    }
}

impl JsonSchema for NanoCpus {
    fn schema_name() -> Cow<'static, str> {
        "Cpus".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A number of CPUs, such as 0.5 or \"2\".",
            "type": ["string", "number"],
            "pattern": CPUS_PATTERN,
            "minimum": 0,
            "x-expected": "a number of CPUs like 0.5 or 2"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        let cases = [
            ("10s", 10_000),
            ("1m30s", 90_000),
            ("500ms", 500),
            ("1.5s", 1500),
            ("2h", 7_200_000),
            ("1h2m3s", 3_723_000),
            ("0", 0),
            ("0s", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(
                Duration::parse(text).unwrap().0.as_millis(),
                ms as u128,
                "{text}"
            );
        }
        for bad in ["", "10", "ten seconds", "10 s", "1d", "-5s", "s", "1.2.3s"] {
            assert!(Duration::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_display_canonically() {
        for (text, shown) in [
            ("90s", "1m30s"),
            ("500ms", "500ms"),
            ("0", "0s"),
            ("1h", "1h"),
        ] {
            assert_eq!(Duration::parse(text).unwrap().to_string(), shown);
        }
    }

    #[test]
    fn the_duration_pattern_agrees_with_the_parser() {
        let re = regex_lite_match;
        for t in ["10s", "1m30s", "0", "1.5h", "500ms", "10us"] {
            assert!(re(t), "{t}");
        }
        for t in ["10", "ten", "1d", ""] {
            assert!(!re(t), "{t}");
        }
    }

    // The schema pattern is checked by jsonschema elsewhere; here a tiny matcher keeps the two
    // definitions honest without another dependency.
    fn regex_lite_match(t: &str) -> bool {
        let schema = serde_json::json!({"type": "string", "pattern": DURATION_PATTERN});
        jsonschema::is_valid(&schema, &serde_json::json!(t))
    }

    #[test]
    fn sizes_use_binary_multiples_like_docker() {
        assert_eq!(Bytes::parse("512M").unwrap().0, 512 << 20);
        assert_eq!(Bytes::parse("512MiB").unwrap().0, 512 << 20);
        assert_eq!(Bytes::parse("1g").unwrap().0, 1 << 30);
        assert_eq!(Bytes::parse("1.5G").unwrap().0, 3 << 29);
        assert_eq!(Bytes::parse("100k").unwrap().0, 100 << 10);
        assert_eq!(Bytes::parse("1024").unwrap().0, 1024);
        assert_eq!(Bytes::parse("64mb").unwrap().0, 64 << 20);
        for bad in ["", "M", "12X", "-5M", "1.2.3M"] {
            assert!(Bytes::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Bytes(512 << 20).to_string(), "512MiB");
    }

    #[test]
    fn cpus() {
        assert_eq!(NanoCpus::parse("0.5").unwrap().0, 500_000_000);
        assert_eq!(NanoCpus::parse("2").unwrap().0, 2_000_000_000);
        assert!(NanoCpus::parse("half").is_err());
    }
    #[test]
    fn every_duration_unit_and_its_scale() {
        for (text, nanos) in [
            ("7ns", 7u128),
            ("7us", 7_000),
            ("7µs", 7_000),
            ("7ms", 7_000_000),
            ("7s", 7_000_000_000),
            ("7m", 420_000_000_000),
            ("7h", 25_200_000_000_000),
            ("+7s", 7_000_000_000),
            (" 7s ", 7_000_000_000),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("1m0.5s", 60_500_000_000),
        ] {
            assert_eq!(Duration::parse(text).unwrap().0.as_nanos(), nanos, "{text}");
        }
        // Beyond about 31,000 years is not a duration anyone means.
        assert!(Duration::parse("1000000000000s").is_ok());
        assert!(Duration::parse("1000000000001s").is_err());
        assert!(Duration::parse("300000000h").is_err());
        assert_eq!(Duration::from_millis(1500).0.as_millis(), 1500);
        assert_eq!(
            Duration::from_secs(3).as_std(),
            std::time::Duration::from_secs(3)
        );
    }

    #[test]
    fn sub_second_durations_display_readably() {
        let shown = |nanos: u64| Duration(std::time::Duration::from_nanos(nanos)).to_string();
        assert_eq!(shown(250_000_000), "250ms");
        assert_eq!(shown(1_500_000_000), "1500ms");
        assert_eq!(shown(1_500), "1.5us");
        assert_eq!(shown(999_999), "999.999us");
        assert_eq!(shown(1_000_500), "1.0005ms");
        assert_eq!(shown(3_600_000_000_000), "1h");
        assert_eq!(shown(3_601_000_000_000), "1h1s");
        assert_eq!(shown(3_660_000_000_000), "1h1m");
        assert_eq!(shown(61_000_000_000), "1m1s");
    }

    #[test]
    fn values_read_from_json_as_compose_files_give_them() {
        let d = |v: serde_json::Value| serde_json::from_value::<Duration>(v);
        assert_eq!(d(serde_json::json!("2s")).unwrap(), Duration::from_secs(2));
        assert_eq!(d(serde_json::json!(0)).unwrap(), Duration::ZERO);
        assert!(
            d(serde_json::json!(5)).is_err(),
            "a bare number is not a duration"
        );
        assert!(d(serde_json::json!(true)).is_err());
        assert_eq!(
            serde_json::to_value(Duration::from_secs(90)).unwrap(),
            "1m30s"
        );

        let b = |v: serde_json::Value| serde_json::from_value::<Bytes>(v);
        assert_eq!(b(serde_json::json!("1k")).unwrap(), Bytes(1024));
        assert_eq!(b(serde_json::json!(2048)).unwrap(), Bytes(2048));
        assert!(b(serde_json::json!(-1)).is_err());
        assert!(b(serde_json::json!([1])).is_err());
        assert_eq!(serde_json::to_value(Bytes(1 << 30)).unwrap(), "1GiB");

        let c = |v: serde_json::Value| serde_json::from_value::<NanoCpus>(v);
        assert_eq!(
            c(serde_json::json!("1.5")).unwrap(),
            NanoCpus(1_500_000_000)
        );
        assert_eq!(c(serde_json::json!(0.25)).unwrap(), NanoCpus(250_000_000));
        assert!(c(serde_json::json!(-1)).is_err());
        assert!(c(serde_json::json!({})).is_err());
        assert_eq!(serde_json::to_value(NanoCpus(500_000_000)).unwrap(), "0.5");
    }

    #[test]
    fn every_size_unit_and_the_largest_sizes() {
        for (text, bytes) in [
            ("1k", 1u64 << 10),
            ("1K", 1 << 10),
            ("1kb", 1 << 10),
            ("1KiB", 1 << 10),
            ("1m", 1 << 20),
            ("1g", 1 << 30),
            ("1t", 1 << 40),
            ("1p", 1 << 50),
            ("1b", 1),
            (" 3 M ", 3 << 20),
        ] {
            assert_eq!(Bytes::parse(text).unwrap().0, bytes, "{text}");
        }
        assert!(Bytes::parse("16384p").is_ok());
        assert!(Bytes::parse("16385p").is_err(), "beyond u64");
        for (n, shown) in [
            (0u64, "0B"),
            (1, "1B"),
            (1023, "1023B"),
            (1024, "1KiB"),
            (1536, "1536B"),
            (3 << 20, "3MiB"),
            (5 << 40, "5TiB"),
            (2 << 50, "2PiB"),
            ((1 << 30) + (1 << 20), "1025MiB"),
        ] {
            assert_eq!(Bytes(n).to_string(), shown, "{n}");
        }
    }

    #[test]
    fn cpu_counts_have_bounds_and_show_as_numbers() {
        assert_eq!(NanoCpus::parse(" 0.001 ").unwrap().0, 1_000_000);
        assert!(NanoCpus::parse("1000000").is_ok());
        assert!(NanoCpus::parse("1000001").is_err());
        assert!(NanoCpus::parse("-0.5").is_err());
        assert!(NanoCpus::parse("NaN").is_err());
        assert!(NanoCpus::parse("inf").is_err());
        assert_eq!(NanoCpus(1_500_000_000).to_string(), "1.5");
        assert_eq!(NanoCpus(2_000_000_000).to_string(), "2");
    }
    #[test]
    fn parse_errors_say_what_was_expected_and_found() {
        assert_eq!(
            Duration::parse("ten").unwrap_err(),
            "expected a duration like 10s, 1m30s or 500ms, found \"ten\""
        );
        assert_eq!(
            Bytes::parse("lots").unwrap_err(),
            "expected a size like 512M, 1g or 1048576, found \"lots\""
        );
        assert_eq!(
            NanoCpus::parse("half").unwrap_err(),
            "expected a number of CPUs like 0.5 or 2, found \"half\""
        );
    }

    #[test]
    fn each_type_has_a_named_schema_that_takes_what_the_parser_takes() {
        let mut generator = schemars::SchemaGenerator::default();
        let check =
            |name: &str, schema: Schema, good: &[serde_json::Value], bad: &[serde_json::Value]| {
                let schema = schema.to_value();
                for v in good {
                    assert!(jsonschema::is_valid(&schema, v), "{name}: {v} should pass");
                }
                for v in bad {
                    assert!(!jsonschema::is_valid(&schema, v), "{name}: {v} should fail");
                }
                assert!(
                    schema["x-expected"].as_str().is_some_and(|e| !e.is_empty()),
                    "{name}"
                );
            };
        use serde_json::json;
        assert_eq!(Duration::schema_name(), "Duration");
        check(
            "Duration",
            Duration::json_schema(&mut generator),
            &[json!("10s"), json!("1m30s"), json!(0)],
            &[json!("10"), json!(5), json!("ten")],
        );
        assert_eq!(Bytes::schema_name(), "Bytes");
        check(
            "Bytes",
            Bytes::json_schema(&mut generator),
            &[json!("512M"), json!("1gb"), json!(1024)],
            &[json!("12X"), json!(-1), json!(true)],
        );
        assert_eq!(NanoCpus::schema_name(), "Cpus");
        check(
            "Cpus",
            NanoCpus::json_schema(&mut generator),
            &[json!("0.5"), json!(2), json!(1.5)],
            &[json!("half"), json!(-1), json!([])],
        );
    }
}
