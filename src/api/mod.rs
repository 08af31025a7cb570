//! The caller-facing surfaces: gRPC services (and the HTTP routes on the same port), proto <->
//! domain conversion, and the single error -> status mapping.

mod admin;
mod admission;
pub mod client;
#[doc(hidden)]
pub mod convert; // public for benches/ only
pub mod error;
mod grpc;
pub mod http;
mod observe;
mod pipeline;
pub mod tls;
mod validate;

pub use admin::AdminApi;
pub use admission::Quotas;
pub use grpc::{ChatApi, EmbeddingsApi, Gateway};
