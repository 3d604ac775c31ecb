//! Integration tests, built as one binary.

mod cli;
mod kernels;
mod pipeline;
mod util;
