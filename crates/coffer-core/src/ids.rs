//! Identifiers built once at the edge: scopes, columns and key versions.

use std::fmt;

use crate::error::{Error, Result};

/// Longest scope or column id accepted, in bytes.
pub const MAX_ID_LEN: usize = 255;

fn check_id(what: &'static str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(what, "must not be empty"));
    }
    if s.len() > MAX_ID_LEN {
        return Err(Error::invalid(
            what,
            format!("longer than {MAX_ID_LEN} bytes"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(what, "contains control characters"));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Box<str>);

        impl $name {
            /// Validates and wraps an id: 1–255 bytes of UTF-8, no control characters.
            pub fn new(id: impl Into<String>) -> Result<Self> {
                let s = id.into();
                check_id($what, &s)?;
                Ok(Self(s.into_boxed_str()))
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), &*self.0)
            }
        }
    };
}

id_type!(
    /// A key scope: any string the application chooses (a tenant, table, ballot or row). One DEK
    /// chain per scope. Use opaque ids, not personal data: scope ids appear in key stores and logs.
    ScopeId,
    "scope id"
);

id_type!(
    /// A stable logical column id (not the SQL column name, so renames are harmless).
    ColumnId,
    "column id"
);

/// A DEK version number. Versions 0–30 fit in the field header byte; larger ones cost 1–5 bytes more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyVersion(pub u32);

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(ScopeId::new("tenant:acme").is_ok());
        assert!(ScopeId::new("").is_err());
        assert!(ColumnId::new("a\nb").is_err());
        assert!(ColumnId::new("x".repeat(256)).is_err());
        assert_eq!(ColumnId::new("ssn").unwrap().as_str(), "ssn");
    }
}
