//! The KernelCI command-line tool and pipeline service binaries, as thin layers over the
//! `kernelci` library.

pub mod cli;
pub mod demo;
pub mod service;
pub mod up;
