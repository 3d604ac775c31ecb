//! Integration tests, built as one binary.

mod bench;
mod cli;
mod decode;
mod kernels;
mod pipeline;
mod preview;
mod stream;
mod util;
