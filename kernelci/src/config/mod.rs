//! Configuration: the `kernelci.toml` settings and the pipeline YAML configs (trees, build
//! configs, jobs, platforms, scheduler, runtimes, storage, API), loaded with upstream's merge
//! rules and validated with errors that name the file, the line and the key.
