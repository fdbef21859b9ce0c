//! Shared helpers for the drsae benchmarks.
