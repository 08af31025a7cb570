//! Plumbing for running as a fleet: the Redis and etcd connections, key names and Lua scripts. Business meaning
//! (what a cooldown is, when to admit) stays in the modules that own it.

pub mod etcd;
pub mod redis;
