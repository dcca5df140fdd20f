//! The built-in operators behind the job API's transformations.

pub mod basic;
pub mod keyed;
pub mod process;
pub mod watermarks;
pub mod window;
