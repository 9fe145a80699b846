//! Test infrastructure shared by the integration tests. Each test binary uses only part of it.
#![allow(dead_code)]

pub mod agent;
pub mod elasticsearch;
pub mod journal;
pub mod kubernetes;
pub mod prometheus;
