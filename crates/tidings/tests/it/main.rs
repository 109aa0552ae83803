//! Integration tests: the real router and dispatcher over real sockets, real SQLite, and real
//! receivers on loopback.

mod helpers;

mod api;
mod cli;
mod delivery;
mod durability;
mod health;
mod interop;
mod operations;
mod portal;
