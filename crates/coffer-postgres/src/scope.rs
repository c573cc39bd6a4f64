//! Scope templates: `scope = "tenant:{tenant_id}/patients"` gives every tenant (or data subject,
//! or row) of one table its own key-store scope. Placeholders name plaintext columns of the row;
//! a row's scope is the template with their values filled in (docs/COLUMNS.md §7).

use std::fmt;

use coffer_core::ScopeId;

use crate::error::{Error, Result};

/// Longest value a placeholder takes, in bytes.
pub const MAX_VALUE_LEN: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Column(String),
}

/// A table's scope: fixed (`table:patients`) or a template with `{column}` placeholders.
#[derive(Clone, PartialEq, Eq)]
pub struct ScopeTemplate {
    text: String,
    parts: Vec<Part>,
    fixed: Option<ScopeId>,
}

impl fmt::Debug for ScopeTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopeTemplate({:?})", self.text)
    }
}

impl fmt::Display for ScopeTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether `value` can stand in for a placeholder: 1–128 bytes of letters, digits and `.` `_`
/// `-` `@` `+`. Nothing else, so a value can never add a `/`, `:` or `{` to a scope id and two
/// different rows can never resolve to the same scope by accident.
pub fn value_allowed(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_VALUE_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+'))
}

impl ScopeTemplate {
    /// Parses a scope or scope template. `{name}` is a placeholder; `name` must be a plain SQL
    /// identifier. Braces appear only around placeholders.
    pub fn parse(text: &str) -> Result<ScopeTemplate> {
        let bad = |why: String| Error::Schema(format!("scope \"{text}\": {why}"));
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Literal(rest.to_owned()));
                    rest = "";
                }
                Some(i) if rest.as_bytes()[i] == b'}' => {
                    return Err(bad("a '}' closes no placeholder".into()));
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Literal(rest[..i].to_owned()));
                    }
                    let after = &rest[i + 1..];
                    let end = after
                        .find('}')
                        .ok_or_else(|| bad("a '{' is not closed".into()))?;
                    let name = &after[..end];
                    let plain = {
                        let mut chars = name.chars();
                        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                            && name.len() <= 63
                    };
                    if !plain {
                        return Err(bad(format!(
                            "placeholder {{{name}}} must name a column (letters, digits, _)"
                        )));
                    }
                    if matches!(parts.last(), Some(Part::Column(_))) {
                        return Err(bad(format!(
                            "placeholder {{{name}}} follows another with nothing between them, \
                             so two rows could resolve to one scope; put a separator such as '/' between"
                        )));
                    }
                    parts.push(Part::Column(name.to_owned()));
                    rest = &after[end + 1..];
                }
            }
        }
        let fixed = if parts.iter().all(|p| matches!(p, Part::Literal(_))) {
            Some(ScopeId::new(text).map_err(|e| bad(e.to_string()))?)
        } else {
            // Check the literal parts with a sample value in every placeholder.
            let sample: String = parts
                .iter()
                .map(|p| match p {
                    Part::Literal(l) => l.as_str(),
                    Part::Column(_) => "x",
                })
                .collect();
            ScopeId::new(&sample).map_err(|e| bad(e.to_string()))?;
            None
        };
        Ok(ScopeTemplate {
            text: text.to_owned(),
            parts,
            fixed,
        })
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The scope, when the template has no placeholders.
    pub fn fixed(&self) -> Option<&ScopeId> {
        self.fixed.as_ref()
    }

    /// Whether the template has placeholders.
    pub fn is_template(&self) -> bool {
        self.fixed.is_none()
    }

    /// The placeholders' column names, in order (each once).
    pub fn placeholders(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in &self.parts {
            if let Part::Column(c) = p
                && !out.contains(&c.as_str())
            {
                out.push(c);
            }
        }
        out
    }

    /// The scope of a row whose placeholder columns hold `values` (column name, text form).
    /// Every placeholder needs a value; a name that is not a placeholder is refused too, so a
    /// misspelt column never goes unnoticed.
    pub fn resolve(&self, table: &str, values: &[(&str, &str)]) -> Result<ScopeId> {
        if let Some(s) = &self.fixed {
            if let Some((name, _)) = values.first() {
                return Err(Error::Schema(format!(
                    "table '{table}' has the fixed scope '{}': '{name}' is not a placeholder of it",
                    self.text
                )));
            }
            return Ok(s.clone());
        }
        let placeholders = self.placeholders();
        if let Some((name, _)) = values.iter().find(|(n, _)| !placeholders.contains(n)) {
            return Err(Error::Schema(format!(
                "table '{table}': '{name}' is not a placeholder of its scope '{}' (placeholders: {})",
                self.text,
                placeholders.join(", ")
            )));
        }
        let missing: Vec<&str> = placeholders
            .iter()
            .copied()
            .filter(|p| !values.iter().any(|(n, _)| n == p))
            .collect();
        if !missing.is_empty() {
            return Err(self.missing(table, &missing));
        }
        let mut out = String::with_capacity(self.text.len() + 16);
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Column(c) => {
                    let v = values
                        .iter()
                        .find(|(n, _)| n == c)
                        .map(|(_, v)| *v)
                        .unwrap_or_default();
                    if !value_allowed(v) {
                        return Err(Error::value(
                            table,
                            c,
                            format!(
                                "a value of {} bytes cannot be part of a scope id: use 1–{MAX_VALUE_LEN} \
                                 letters, digits or . _ - @ + (an id or a uuid, not a name)",
                                v.len()
                            ),
                        ));
                    }
                    out.push_str(v);
                }
            }
        }
        ScopeId::new(&out).map_err(|e| Error::value(table, "scope", e.to_string()))
    }

    /// The error for a use of a templated table without the placeholders' values.
    pub(crate) fn missing(&self, table: &str, missing: &[&str]) -> Error {
        Error::Schema(format!(
            "table '{table}' keys rows by the scope template '{}': give the value of {} \
             (Columns::for_scope), and filter the SQL on the same column(s): a search computed \
             for one scope finds only that scope's rows",
            self.text,
            missing.join(" and ")
        ))
    }

    /// The values of the placeholders in `scope`, if `scope` is an instance of this template.
    pub fn match_scope<'s>(&self, scope: &'s str) -> Option<Vec<(&str, &'s str)>> {
        let mut out: Vec<(&str, &'s str)> = Vec::new();
        let mut rest = scope;
        for (i, p) in self.parts.iter().enumerate() {
            match p {
                Part::Literal(l) => rest = rest.strip_prefix(l.as_str())?,
                Part::Column(c) => {
                    let end = match self.parts.get(i + 1) {
                        Some(Part::Literal(next)) => rest.find(next.as_str())?,
                        _ => rest.len(),
                    };
                    let v = &rest[..end];
                    if !value_allowed(v) {
                        return None;
                    }
                    if let Some((_, prev)) = out.iter().find(|(n, _)| n == c) {
                        if *prev != v {
                            return None;
                        }
                    } else {
                        out.push((c.as_str(), v));
                    }
                    rest = &rest[end..];
                }
            }
        }
        rest.is_empty().then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_resolve_and_match_back() {
        let t = ScopeTemplate::parse("tenant:{tenant_id}/patients").unwrap();
        assert!(t.is_template());
        assert_eq!(t.placeholders(), vec!["tenant_id"]);
        let s = t.resolve("patients", &[("tenant_id", "acme")]).unwrap();
        assert_eq!(s.as_str(), "tenant:acme/patients");
        assert_eq!(
            t.match_scope("tenant:acme/patients"),
            Some(vec![("tenant_id", "acme")])
        );
        assert_eq!(t.match_scope("tenant:acme/visits"), None);
        assert_eq!(t.match_scope("tenant:a/b/patients"), None);
        let fixed = ScopeTemplate::parse("table:patients").unwrap();
        assert_eq!(fixed.fixed().unwrap().as_str(), "table:patients");
        assert!(fixed.resolve("patients", &[]).is_ok());
    }

    #[test]
    fn bad_templates_and_values_are_refused_with_the_reason() {
        for (text, why) in [
            ("tenant:{tenant-id}", "must name a column"),
            ("tenant:{tenant_id", "not closed"),
            ("tenant}", "closes no placeholder"),
            ("t:{a}{b}", "separator"),
        ] {
            let e = ScopeTemplate::parse(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
        let t = ScopeTemplate::parse("tenant:{tenant_id}/p").unwrap();
        let e = t.resolve("p", &[]).unwrap_err().to_string();
        assert!(e.contains("give the value of tenant_id"), "{e}");
        let e = t
            .resolve("p", &[("tenant_id", "a"), ("tenant", "b")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("'tenant' is not a placeholder"), "{e}");
        for v in ["", "a/b", "a:b", "{x}", "é", &"x".repeat(129)] {
            assert!(t.resolve("p", &[("tenant_id", v)]).is_err(), "{v:?}");
        }
    }
}
