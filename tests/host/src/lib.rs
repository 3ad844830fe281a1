//! Host integration tests live in tests/; see tests/common for the harness.

#![forbid(unsafe_code)]
