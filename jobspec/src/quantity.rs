//! Parsing of resource quantities and durations as written in specs.
//!
//! - CPU: cores (`2`, `0.5`, `"1.5"`) or millicores (`"250m"`) -> millicores.
//! - Bytes: plain (`1024`), binary (`64Mi`, `1Gi`: Ki Mi Gi Ti Pi) or decimal (`100M`: k K M G T P).
//! - Durations: `500ms`, `10s`, `2m`, `1h`, or a number of seconds -> milliseconds.

/// A quantity that does not parse: the message says what was wrong and what is allowed
/// (`cpu: "2 cores" ...`, `unknown suffix "MB" ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuantityError(pub String);

/// `format!` into a [`QuantityError`].
macro_rules! qe {
    ($($t:tt)*) => { QuantityError(format!($($t)*)) };
}

/// A scalar as it appeared in YAML: number or string. Specs may write `cpu: 0.5` or `cpu: "500m"`.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A YAML integer.
    Int(i64),
    /// A YAML float.
    Float(f64),
    /// A YAML string.
    Str(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v).map(Scalar::Int).map_err(|_| E::custom("number too large"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Splits `"12.5Mi"` into (`12.5`, `"Mi"`).
fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// Multiplies a decimal string by `unit` exactly where possible (`"0.5"` x 1000 = 500).
/// Errors: not a number, negative, or not a whole number of base units.
fn scaled(num: &str, unit: u64, what: &str) -> Result<u64, QuantityError> {
    let bad = || qe!("{what}: {num:?} is not a non-negative number");
    if num.is_empty() || num.chars().filter(|&c| c == '.').count() > 1 {
        return Err(bad());
    }
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let int: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| bad())? };
    let mut total = int.checked_mul(unit as u128).ok_or_else(|| qe!("{what}: {num} is too large"))?;
    if !frac.is_empty() {
        let denom = 10u128.checked_pow(frac.len() as u32).ok_or_else(bad)?;
        let f: u128 = frac.parse().map_err(|_| bad())?;
        let part = f * unit as u128;
        if !part.is_multiple_of(denom) {
            return Err(qe!("{what}: {num} is not a whole number of base units"));
        }
        total += part / denom;
    }
    u64::try_from(total).map_err(|_| qe!("{what}: {num} is too large"))
}

fn scalar_text(v: &Scalar) -> Result<String, QuantityError> {
    match v {
        Scalar::Int(i) if *i < 0 => Err(qe!("{i} is negative")),
        Scalar::Int(i) => Ok(i.to_string()),
        Scalar::Float(x) if !(x.is_finite() && *x >= 0.0) => Err(qe!("{x} is not a non-negative number")),
        Scalar::Float(x) => Ok(format!("{x}")),
        Scalar::Str(s) => Ok(s.trim().to_string()),
    }
}

/// CPU quantity -> millicores. `2` = 2000, `0.5` = 500, `"250m"` = 250.
///
/// Errors: negative, unparsable, unknown suffix, or a fraction of a millicore.
pub fn parse_cpu(v: &Scalar) -> Result<u64, QuantityError> {
    let s = scalar_text(v)?;
    match s.strip_suffix('m') {
        Some(m) => scaled(m, 1, "cpu"),
        None => {
            let (num, suffix) = split_number(&s);
            if !suffix.is_empty() {
                return Err(qe!(
                    "cpu: unknown suffix {suffix:?} in {s:?} (use cores like \"0.5\" or millicores like \"500m\")"
                ));
            }
            scaled(num, 1000, "cpu")
        }
    }
}

/// Byte quantity -> bytes. `1024`, `64Mi` (binary), `100M` (decimal).
///
/// Errors: negative, unparsable, unknown suffix, or a fraction of a byte.
pub fn parse_bytes(v: &Scalar) -> Result<u64, QuantityError> {
    let s = scalar_text(v)?;
    let (num, suffix) = split_number(&s);
    let unit: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        _ => return Err(qe!("unknown suffix {suffix:?} in {s:?} (use Ki, Mi, Gi, Ti or k, M, G, T)")),
    };
    scaled(num, unit, "size")
}

/// Duration -> milliseconds. `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
///
/// Errors: negative, unparsable, unknown suffix, or a fraction of a millisecond.
pub fn parse_duration_ms(v: &Scalar) -> Result<u64, QuantityError> {
    let s = scalar_text(v)?;
    let (num, suffix) = split_number(&s);
    let unit = match suffix {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(qe!("unknown suffix {suffix:?} in {s:?} (use ms, s, m or h)")),
    };
    scaled(num, unit, "duration")
}

/// Parses `cpu=2,ram=4Gi,disk=10Gi` (any order, `,` or whitespace between, missing keys are 0)
/// into a resource vector (millicores, bytes, bytes).
///
/// Errors: an unknown key, a missing `=`, or a value its parser rejects.
pub fn parse_resources(s: &str) -> Result<scheduler_core::Resources, QuantityError> {
    parse_resources_named(s).map(|(r, _)| r)
}

/// Like [`parse_resources`], also returning the dimensions named (`"cpu"`, `"ram"`, `"disk"`, in
/// the order given): `quota set` changes only those.
///
/// Errors: as [`parse_resources`], and a dimension named twice.
pub fn parse_resources_named(s: &str) -> Result<(scheduler_core::Resources, Vec<&'static str>), QuantityError> {
    let mut r = scheduler_core::Resources::ZERO;
    let mut named = Vec::new();
    for part in s.split([',', ' ']).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| qe!("{part:?} is not key=value (cpu=, ram=, disk=)"))?;
        let v = Scalar::Str(v.to_string());
        let dim = match k {
            "cpu" => {
                r.cpu_millis = parse_cpu(&v)?;
                "cpu"
            }
            "ram" => {
                r.ram_bytes = parse_bytes(&v)?;
                "ram"
            }
            "disk" => {
                r.disk_bytes = parse_bytes(&v)?;
                "disk"
            }
            _ => return Err(qe!("unknown resource {k:?} (cpu, ram, disk)")),
        };
        if named.contains(&dim) {
            return Err(qe!("{dim} is given twice"));
        }
        named.push(dim);
    }
    Ok((r, named))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists() {
        assert_eq!(parse_resources("cpu=2,ram=4Gi disk=1Ki"), Ok(scheduler_core::Resources::new(2000, 4 << 30, 1024)));
        assert_eq!(parse_resources("ram=1Mi"), Ok(scheduler_core::Resources::new(0, 1 << 20, 0)));
        assert!(parse_resources("gpu=1").is_err());
        assert!(parse_resources("cpu").is_err());
        assert_eq!(parse_resources_named("ram=1Mi cpu=1").unwrap().1, ["ram", "cpu"]);
        assert!(parse_resources_named("cpu=1,cpu=2").unwrap_err().0.contains("twice"));
    }

    fn s(x: &str) -> Scalar {
        Scalar::Str(x.into())
    }

    #[test]
    fn cpu_in_cores_or_millicores() {
        assert_eq!(parse_cpu(&s("250m")), Ok(250));
        assert_eq!(parse_cpu(&s("0.5")), Ok(500));
        assert_eq!(parse_cpu(&Scalar::Float(1.5)), Ok(1500));
        assert_eq!(parse_cpu(&Scalar::Int(2)), Ok(2000));
        assert!(parse_cpu(&s("0.0005")).is_err());
        assert!(parse_cpu(&Scalar::Int(-1)).is_err());
        assert!(parse_cpu(&s("2 cores")).is_err());
        assert!(parse_cpu(&s("1.2.3")).is_err());
    }

    #[test]
    fn bytes_binary_and_decimal() {
        assert_eq!(parse_bytes(&s("64Mi")), Ok(64 << 20));
        assert_eq!(parse_bytes(&s("1.5Gi")), Ok(3 << 29));
        assert_eq!(parse_bytes(&s("100M")), Ok(100_000_000));
        assert_eq!(parse_bytes(&Scalar::Int(4096)), Ok(4096));
        assert!(parse_bytes(&s("64MB")).is_err());
        assert!(parse_bytes(&s("99999999Pi")).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms(&s("10s")), Ok(10_000));
        assert_eq!(parse_duration_ms(&s("500ms")), Ok(500));
        assert_eq!(parse_duration_ms(&s("1.5m")), Ok(90_000));
        assert_eq!(parse_duration_ms(&Scalar::Int(3)), Ok(3000));
        assert!(parse_duration_ms(&s("3d")).is_err());
    }
}
