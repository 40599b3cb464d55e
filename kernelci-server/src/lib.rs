//! kernelci-server: the KernelCI API server (warp).
//!
//! - [`storage_upload`]: the kernelci-storage upload endpoint (`/upload`, `/v1/archive`),
//!   the server side of [`kernelci::storage::HttpStorage`].

#![warn(missing_docs)]

pub mod storage_upload;
