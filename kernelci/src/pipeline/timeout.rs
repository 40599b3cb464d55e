//! The timeout service: timeout, holdoff and closing modes.
