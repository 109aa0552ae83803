//! What is particular to the PostgreSQL store: several nodes sharing one database (claims, leases,
//! limits, recording, wake-ups) and what nodes see while PostgreSQL is down. The behaviour both
//! backends share is the store conformance suite's (crates/tidings/tests/store).

mod cascades;
mod claims;
mod held;
mod helpers;
mod publish;
mod record;
mod wake;
