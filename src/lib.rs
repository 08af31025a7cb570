//! Switchboard: an LLM gateway. Internal services call it over gRPC (and OpenAI SDKs over HTTP on
//! the same port); it routes each call to a deployment of the named model group, translates to the
//! provider's wire format, retries and fails over, and accounts usage.
//!
//! # Layout
//!
//! Dependency direction, low to high: `domain` <- `config` <- `providers` <- `router`, `auth`
//! <- `api` <- `app`. A test (`tests/layering.rs`) keeps these directions honest.
//!
//! - [`domain`]: canonical request/response types, ids, money, secrets. No I/O.
//! - [`config`]: LiteLLM-compatible YAML -> validated [`config::Config`].
//! - [`providers`]: the [`providers::Provider`] trait and one module per wire format; pure translate
//!   and parse functions, with HTTP I/O in `providers/client.rs` only.
//! - [`cluster`]: Redis connection, key names and Lua scripts (fleet plumbing, no business rules).
//! - [`router`]: model groups, deployment choice, failover, deadlines. Reads shared deployment state
//!   only through [`router::DeploymentState`].
//! - [`auth`]: bearer keys, the master key, principals.
//! - [`api`]: gRPC services, proto <-> domain conversion, THE error -> `tonic::Status` mapping.
//! - [`app`]: the composition root: the only place that builds components and wires them.
//! - [`proto`]: generated code, seen only by `api` and `app`.

pub mod api;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod control;
pub mod domain;
pub mod limits;
pub mod proto;
pub mod providers;
pub mod router;
pub mod telemetry;
