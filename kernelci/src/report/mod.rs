//! The result report: gathering a checkout's jobs and failures, rendering the upstream
//! subject and body, and sending it over SMTP (lettre, feature `email`).
