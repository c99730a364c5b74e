//! The sluice worker service.

pub mod command;
