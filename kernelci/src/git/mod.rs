//! Git operations the pipeline needs: `ls-remote`, mirror update, checkout, `describe`, the
//! kernel version from the Makefile and the source tarball (libgit2 via `git2`, feature `git`).
