//! Delivery: the dispatcher that claims due deliveries, the HTTP client with its SSRF guard, the
//! signed request, and the recording of each attempt's outcome.

mod client;
mod dispatcher;
pub mod maintenance;
mod recorder;
mod request;
mod ssrf;

pub use client::{AttemptReport, DeliveryClient};
pub use dispatcher::{Dispatcher, DispatcherConfig};
pub use request::{SignedRequest, build_request};
