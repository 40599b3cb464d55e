//! E-mail from the server: invites, welcome, password reset (api spec §3.2, §9.1).
//!
//! The settings are upstream's: `SMTP_HOST`, `SMTP_PORT`, `EMAIL_SENDER` (the `From` and the
//! login) and `EMAIL_PASSWORD` (see [`crate::config::ServerConfig`]). Port 465 means implicit
//! TLS; any other port uses STARTTLS when the server offers it. Messages go out through
//! [`kernelci::report::send`] (lettre's async transport: it never blocks the runtime) with
//! one deadline for the whole exchange (`--smtp-timeout`). Every failure is logged here; the
//! callers decide what it means for the request (ignored, `email_sent: false`, or an error).

use std::time::Duration;

use kernelci::report::SmtpConfig;

use crate::config::ServerConfig;
use crate::http::ApiError;

/// Why an e-mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// Some SMTP settings are missing. The text is upstream's (pydantic's) validation text,
    /// which `/user/forgot-password` answers with a 400.
    #[error("{0}")]
    NotConfigured(String),
    /// The SMTP exchange failed or timed out.
    #[error("sending e-mail: {0}")]
    Send(#[from] kernelci::report::ReportError),
}

impl MailError {
    /// The error kind.
    pub fn kind(&self) -> kernelci::ErrorKind {
        match self {
            MailError::NotConfigured(_) => kernelci::ErrorKind::Invalid,
            MailError::Send(e) => e.kind(),
        }
    }

    /// The reply of the routes whose e-mail must go out (forgot-password, reset-password):
    /// 400 with the validation text when unconfigured, 500 `Failed to send email` otherwise.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            MailError::NotConfigured(text) => ApiError::bad_request(text.clone()),
            MailError::Send(_) => ApiError::new(
                warp::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Failed to send email",
            ),
        }
    }
}

/// The SMTP settings of the server.
#[derive(Clone)]
pub struct Mailer {
    host: Option<String>,
    port: Option<u16>,
    sender: Option<String>,
    password: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("sender", &self.sender)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl Mailer {
    /// The settings from the server configuration.
    pub fn from_config(config: &ServerConfig) -> Mailer {
        Mailer {
            host: non_empty(&config.smtp_host),
            port: config.smtp_port,
            sender: non_empty(&config.email_sender),
            password: config.email_password.clone().filter(|p| !p.is_empty()),
            timeout: Duration::from_secs(config.smtp_timeout.max(1)),
        }
    }

    /// Upstream's validation error for the missing SMTP settings.
    pub fn not_configured(&self) -> MailError {
        MailError::NotConfigured(self.validation_text())
    }

    /// Whether every needed setting is there.
    pub fn is_configured(&self) -> bool {
        self.host.is_some() && self.port.is_some() && self.sender.is_some()
    }

    /// The lettre settings for one message to `to`, or upstream's validation text naming the
    /// missing settings.
    pub fn smtp_config(&self, to: &str) -> Result<SmtpConfig, MailError> {
        match (&self.host, self.port, &self.sender) {
            // One recipient: the sender splits recipient lists on commas.
            (Some(_), Some(_), Some(_)) if to.contains(',') => Err(MailError::Send(
                kernelci::report::ReportError::Message(format!("not one address: '{to}'")),
            )),
            (Some(host), Some(port), Some(sender)) => Ok(SmtpConfig {
                host: host.clone(),
                port,
                user: self.password.as_ref().map(|_| sender.clone()),
                password: self.password.clone(),
                sender: sender.clone(),
                recipients: vec![to.to_owned()],
                timeout: self.timeout,
            }),
            _ => Err(MailError::NotConfigured(self.validation_text())),
        }
    }

    /// What pydantic says about upstream's `EmailSettings` when variables are missing (the
    /// password's value is never shown).
    fn validation_text(&self) -> String {
        let mut given: Vec<String> = Vec::new();
        if let Some(h) = &self.host {
            given.push(format!("'smtp_host': '{h}'"));
        }
        if let Some(p) = self.port {
            given.push(format!("'smtp_port': '{p}'"));
        }
        if let Some(s) = &self.sender {
            given.push(format!("'email_sender': '{s}'"));
        }
        if self.password.is_some() {
            given.push("'email_password': '**********'".to_owned());
        }
        let input = format!("{{{}}}", given.join(", "));
        let missing: Vec<&str> = [
            ("smtp_host", self.host.is_none()),
            ("smtp_port", self.port.is_none()),
            ("email_sender", self.sender.is_none()),
        ]
        .iter()
        .filter(|(_, m)| *m)
        .map(|(n, _)| *n)
        .collect();
        let mut text = format!(
            "{} validation error{} for EmailSettings",
            missing.len(),
            if missing.len() == 1 { "" } else { "s" }
        );
        for name in missing {
            text.push_str(&format!(
                "\n{name}\n  Field required [type=missing, input_value={input}, input_type=dict]\n    \
                 For further information visit https://errors.pydantic.dev/2.11/v/missing"
            ));
        }
        text
    }

    /// Sends one plain-text message to `to`; failures are logged (warn) and returned.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), MailError> {
        let config = match self.smtp_config(to) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    to,
                    subject,
                    "e-mail not sent: SMTP is not configured (SMTP_HOST, SMTP_PORT, EMAIL_SENDER)"
                );
                return Err(e);
            }
        };
        match kernelci::report::send(&config, subject, body).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(to, subject, error = %e, "e-mail not sent");
                Err(e.into())
            }
        }
    }
}

/// The texts of the server's e-mails: `(subject, body)`.
pub mod texts {
    /// The invite: the accept-invite link with its token.
    pub fn invite(username: &str, invite_url: &str, valid_secs: u64) -> (String, String) {
        let days = valid_secs / 86_400;
        let validity = if days >= 1 {
            format!("{days} day{}", if days == 1 { "" } else { "s" })
        } else {
            format!("{} hour(s)", (valid_secs / 3600).max(1))
        };
        (
            "Invitation to the KernelCI API".to_owned(),
            format!(
                "Hello {username},\n\n\
                 You have been invited to the KernelCI API. To accept the invitation, open this \
                 link and choose your password:\n\n{invite_url}\n\n\
                 The link is valid for {validity}. Your username is: {username}\n\n\
                 If you did not expect this invitation, you can ignore this e-mail.\n"
            ),
        )
    }

    /// The welcome after an accepted invite.
    pub fn welcome(username: &str) -> (String, String) {
        (
            "Welcome to the KernelCI API".to_owned(),
            format!(
                "Hello {username},\n\n\
                 Your KernelCI API account is now active. Log in with your username \
                 ({username}) and the password you chose.\n"
            ),
        )
    }

    /// The reset token (upstream's subject).
    pub fn reset_token(username: &str, token: &str, reset_url: &str) -> (String, String) {
        (
            "Reset Password Token for KernelCI API account".to_owned(),
            format!(
                "Hello {username},\n\n\
                 Someone asked to reset the password of your KernelCI API account. If it was \
                 you, send this token with your new password to {reset_url} within one hour, \
                 for example:\n\n  \
                 curl -X POST {reset_url} -H 'Content-Type: application/json' \\\n    \
                 -d '{{\"token\": \"{token}\", \"password\": \"<new password>\"}}'\n\n\
                 Token: {token}\n\n\
                 If it was not you, ignore this e-mail: your password has not changed.\n"
            ),
        )
    }

    /// The confirmation after a reset (upstream's subject).
    pub fn reset_done(username: &str) -> (String, String) {
        (
            "Password reset successful for KernelCI API account".to_owned(),
            format!(
                "Hello {username},\n\n\
                 The password of your KernelCI API account has been reset. If you did not do \
                 this, contact the administrators of the KernelCI API at once.\n"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_settings_read_as_pydantic_does() {
        let none = Mailer::from_config(&ServerConfig::for_tests());
        assert!(!none.is_configured());
        let Err(MailError::NotConfigured(text)) = none.smtp_config("a@example.org") else {
            panic!("configured without settings");
        };
        assert!(
            text.starts_with("3 validation errors for EmailSettings\nsmtp_host\n  Field required [type=missing, input_value={}, input_type=dict]"),
            "{text}"
        );
        let mut config = ServerConfig::for_tests();
        config.smtp_host = Some("mail.example.org".into());
        config.email_password = Some("hunter2".into());
        config.email_sender = Some("  ".into());
        let some = Mailer::from_config(&config);
        let Err(e) = some.smtp_config("a@example.org") else {
            panic!("configured without a port");
        };
        let text = e.to_string();
        assert!(
            text.starts_with("2 validation errors for EmailSettings\nsmtp_port\n"),
            "{text}"
        );
        assert!(text.contains("\nemail_sender\n"), "{text}");
        assert!(!text.contains("hunter2"), "the password leaked: {text}");
        assert_eq!(e.to_api_error().status, 400);
    }

    #[test]
    fn login_with_the_sender_only_with_a_password() {
        let mut config = ServerConfig::for_tests();
        config.smtp_host = Some("mail.example.org".into());
        config.smtp_port = Some(465);
        config.email_sender = Some("kernelci@example.org".into());
        config.smtp_timeout = 7;
        let c = Mailer::from_config(&config)
            .smtp_config("a@example.org")
            .expect("configured");
        assert_eq!((c.user, c.password), (None, None));
        assert_eq!(c.recipients, ["a@example.org"]);
        assert_eq!(c.timeout, Duration::from_secs(7));
        config.email_password = Some("pw".into());
        let c = Mailer::from_config(&config)
            .smtp_config("a@example.org")
            .expect("configured");
        assert_eq!(c.user.as_deref(), Some("kernelci@example.org"));
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert_eq!((c.host.as_str(), c.port), ("mail.example.org", 465));
        assert!(matches!(
            Mailer::from_config(&config).smtp_config("a@example.org,b@example.org"),
            Err(MailError::Send(_))
        ));
    }
}
