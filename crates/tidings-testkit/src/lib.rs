//! Test support shared by the test suites and the benchmark: throwaway PostgreSQL clusters, and
//! the port a `tidings serve` process listens on.

pub mod postgres;
pub mod serving;
