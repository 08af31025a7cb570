//! Switchboard: an LLM gateway. Internal services call it over gRPC (and OpenAI SDKs over HTTP on
//! the same port); it routes each call to a deployment of the named model group, translates to the
//! provider's wire format, retries and fails over, and accounts usage.
//!
//! # Layout
//!
//! Dependency direction, low to high: `domain` <- `config` <- `providers`, `cluster` <- `router`,
//! `auth`, `limits` <- `control` <- `api` <- `app`. A test (`tests/layering.rs`) keeps these
//! directions honest.
//!
//! - [`domain`]: canonical request/response types, ids, money, secrets. No I/O.
//! - [`config`]: LiteLLM-compatible YAML -> validated [`config::Config`].
//! - [`providers`]: the [`providers::Provider`] trait and one module per wire format; pure translate
//!   and parse functions, with HTTP I/O in `providers/client.rs` only.
//! - [`cluster`]: Redis and etcd connections, key names, the router's Lua scripts (fleet plumbing).
//! - [`router`]: model groups, deployment choice, failover, deadlines. Reads shared deployment state
//!   only through [`router::DeploymentState`].
//! - [`auth`]: the master key and virtual keys, teams and users (hashed keys in an in-memory
//!   directory kept in step with etcd by a watch), principals, admin operations on them.
//! - [`cache`]: the response cache (memory or Redis), cache keys, single-flight fills.
//! - [`limits`]: budgets, rate limits and spend: one atomic admission across every scope of a
//!   request (memory or Redis Lua), settlement after the answer, spend reports and checkpoints.
//! - [`control`]: which config is served: file reload on a single node; leader election, the
//!   fenced config document and its watch on etcd in a fleet.
//! - [`api`]: gRPC services, proto <-> domain conversion, THE error -> `tonic::Status` mapping.
//! - [`app`]: the composition root: the only place that builds components and wires them.
//! - [`proto`]: generated code, seen only by `api` and `app`.

pub mod api;
pub mod app;
pub mod auth;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod control;
pub mod domain;
pub mod limits;
pub mod proto;
pub mod providers;
pub mod router;
pub mod telemetry;
