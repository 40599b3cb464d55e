//! The tarball service: source tarballs for new checkouts.
