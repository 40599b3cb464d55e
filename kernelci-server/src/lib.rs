//! kernelci-server (skeleton).
