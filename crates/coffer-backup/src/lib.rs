//! Coffer's encrypted backups (skeleton; filled in by the backup work).

#![forbid(unsafe_code)]
#![deny(missing_docs)]
