//! What a field ciphertext is bound to besides its key (docs/FORMAT.md §2.3).

use std::fmt;

use crate::value::ValueType;

/// The caller's context for one value: its type, an optional search domain and an optional row
/// context. All of it enters the AAD and none of it is stored.
///
/// - The **row context** (primary key, tenant, …) binds a randomized ciphertext to its row: moved
///   to another row, it fails to decrypt. Deterministic suites refuse a row context.
/// - The **search domain** (e.g. the tenant) is the same for every row that must compare equal.
#[derive(Clone, Copy, Default)]
pub struct FieldContext<'a> {
    pub(crate) value_type: ValueType,
    pub(crate) domain: &'a [&'a [u8]],
    pub(crate) row: &'a [&'a [u8]],
}

impl<'a> FieldContext<'a> {
    /// No row, no domain, raw bytes.
    pub const fn new() -> Self {
        FieldContext {
            value_type: ValueType::Bytes,
            domain: &[],
            row: &[],
        }
    }

    /// Binds the value to a row: each component (e.g. tenant id, primary key) is encoded
    /// separately, so `["1", "23"]` and `["12", "3"]` differ.
    pub const fn row(row: &'a [&'a [u8]]) -> Self {
        FieldContext {
            value_type: ValueType::Bytes,
            domain: &[],
            row,
        }
    }

    /// Sets the row context.
    pub const fn with_row(mut self, row: &'a [&'a [u8]]) -> Self {
        self.row = row;
        self
    }

    /// Sets the search domain.
    pub const fn with_domain(mut self, domain: &'a [&'a [u8]]) -> Self {
        self.domain = domain;
        self
    }

    /// Sets the value type.
    pub const fn with_type(mut self, value_type: ValueType) -> Self {
        self.value_type = value_type;
        self
    }

    /// The value type.
    pub fn value_type(&self) -> ValueType {
        self.value_type
    }
}

impl fmt::Debug for FieldContext<'_> {
    // Row and domain components can be personal data (a patient id): show only their count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldContext")
            .field("value_type", &self.value_type)
            .field("domain_components", &self.domain.len())
            .field("row_components", &self.row.len())
            .finish()
    }
}
