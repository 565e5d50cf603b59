//! Hard constraints on machine attributes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Machine attributes: `key -> value` (e.g. `arch -> x86_64`, `rack -> r12`).
pub type Attributes = BTreeMap<String, String>;

/// Operator of a [`Constraint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConstraintOp {
    /// The attribute exists and equals the single value.
    Eq,
    /// The attribute is missing or differs from the single value.
    Ne,
    /// The attribute exists and is one of the values.
    In,
    /// The attribute is missing or is none of the values.
    NotIn,
}

impl ConstraintOp {
    /// Spelling in specs: `==`, `!=`, `in`, `not-in`.
    pub fn symbol(self) -> &'static str {
        match self {
            ConstraintOp::Eq => "==",
            ConstraintOp::Ne => "!=",
            ConstraintOp::In => "in",
            ConstraintOp::NotIn => "not-in",
        }
    }

    /// The operator spelled `s` in a spec, if any.
    pub fn from_symbol(s: &str) -> Option<ConstraintOp> {
        [ConstraintOp::Eq, ConstraintOp::Ne, ConstraintOp::In, ConstraintOp::NotIn]
            .into_iter()
            .find(|op| op.symbol() == s)
    }
}

/// A hard constraint: `attribute op values` must hold on a machine for a task to go there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Constraint {
    /// Attribute key.
    pub attribute: String,
    /// Operator.
    pub op: ConstraintOp,
    /// One value for `==`/`!=`; one or more for `in`/`not-in`.
    pub values: Vec<String>,
}

impl Constraint {
    /// Whether the constraint holds on a machine with these attributes. A missing attribute fails
    /// `==` and `in` and satisfies `!=` and `not-in`.
    pub fn holds(&self, attrs: &Attributes) -> bool {
        let v = attrs.get(&self.attribute);
        let listed = v.is_some_and(|v| self.values.iter().any(|x| x == v));
        match self.op {
            ConstraintOp::Eq | ConstraintOp::In => listed,
            ConstraintOp::Ne | ConstraintOp::NotIn => !listed,
        }
    }
}

impl fmt::Display for Constraint {
    /// `arch == x86_64`, `rack in [r1, r2]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            ConstraintOp::Eq | ConstraintOp::Ne => write!(
                f,
                "{} {} {}",
                self.attribute,
                self.op.symbol(),
                self.values.first().map(String::as_str).unwrap_or("")
            ),
            ConstraintOp::In | ConstraintOp::NotIn => {
                write!(f, "{} {} [{}]", self.attribute, self.op.symbol(), self.values.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(kv: &[(&str, &str)]) -> Attributes {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn c(op: ConstraintOp, vals: &[&str]) -> Constraint {
        Constraint { attribute: "arch".into(), op, values: vals.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn operators_and_missing_attributes() {
        let x86 = attrs(&[("arch", "x86_64")]);
        let none = attrs(&[]);
        assert!(c(ConstraintOp::Eq, &["x86_64"]).holds(&x86));
        assert!(!c(ConstraintOp::Eq, &["arm64"]).holds(&x86));
        assert!(!c(ConstraintOp::Eq, &["x86_64"]).holds(&none));
        assert!(c(ConstraintOp::Ne, &["arm64"]).holds(&x86));
        assert!(c(ConstraintOp::Ne, &["arm64"]).holds(&none));
        assert!(!c(ConstraintOp::Ne, &["x86_64"]).holds(&x86));
        assert!(c(ConstraintOp::In, &["arm64", "x86_64"]).holds(&x86));
        assert!(!c(ConstraintOp::In, &["arm64"]).holds(&none));
        assert!(c(ConstraintOp::NotIn, &["arm64"]).holds(&x86));
        assert!(!c(ConstraintOp::NotIn, &["arm64", "x86_64"]).holds(&x86));
        assert_eq!(c(ConstraintOp::In, &["a", "b"]).to_string(), "arch in [a, b]");
        assert_eq!(ConstraintOp::from_symbol("not-in"), Some(ConstraintOp::NotIn));
        assert_eq!(ConstraintOp::from_symbol("=~"), None);
    }
}
