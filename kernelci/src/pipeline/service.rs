//! What every service shares: durable subscription, liveness, graceful shutdown.
