//! The report service: a report for each finished checkout.
