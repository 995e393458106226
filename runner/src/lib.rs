//! Containers on a unionfs root.
