//! Coffer's composition root (skeleton; filled in by the assembly work).

#![forbid(unsafe_code)]
#![deny(missing_docs)]
