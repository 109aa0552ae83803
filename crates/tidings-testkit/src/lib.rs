//! Test support shared by the test suites and the benchmark: throwaway PostgreSQL clusters.

pub mod postgres;
