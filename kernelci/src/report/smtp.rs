//! Sending e-mail over SMTP with lettre (upstream `EmailSender`): the pipeline's reports and
//! the API server's invite and password-reset messages both go through [`send`], which takes
//! any subject and plain-text body.

use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::ReportError;

/// Where and how to send reports (upstream `[test_report]` plus `EMAIL_USER`/`EMAIL_PASSWORD`).
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// SMTP host.
    pub host: String,
    /// SMTP port: 465 means implicit TLS; any other port uses STARTTLS when the server offers
    /// it.
    pub port: u16,
    /// Login user (`EMAIL_USER`), when the server wants one.
    pub user: Option<String>,
    /// Login password (`EMAIL_PASSWORD`).
    pub password: Option<String>,
    /// `From`.
    pub sender: String,
    /// `To` (several recipients are comma-joined in one header).
    pub recipients: Vec<String>,
    /// How long sending one message may take, from connecting to the server's last answer.
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .field("sender", &self.sender)
            .field("recipients", &self.recipients)
            .finish()
    }
}

impl SmtpConfig {
    /// A configuration for `host:port`, with the login from `EMAIL_USER` and `EMAIL_PASSWORD`
    /// when they are set.
    pub fn from_env(host: &str, port: u16, sender: &str, recipients: Vec<String>) -> SmtpConfig {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        SmtpConfig {
            host: host.to_owned(),
            port,
            user: var("EMAIL_USER"),
            password: var("EMAIL_PASSWORD"),
            sender: sender.to_owned(),
            recipients,
            timeout: Duration::from_secs(60),
        }
    }

    fn smtp_err(&self, message: impl std::fmt::Display) -> ReportError {
        ReportError::Smtp {
            host: self.host.clone(),
            port: self.port,
            message: message.to_string(),
        }
    }
}

fn mailbox(addr: &str) -> Result<Mailbox, ReportError> {
    addr.trim()
        .parse()
        .map_err(|e| ReportError::Message(format!("bad address '{addr}': {e}")))
}

/// Builds the message: `From`, `To`, `Subject`, and one `text/plain; charset=utf-8` part in
/// quoted-printable inside a multipart body.
pub fn build_message(
    config: &SmtpConfig,
    subject: &str,
    body: &str,
) -> Result<Message, ReportError> {
    if config.recipients.is_empty() {
        return Err(ReportError::Message("no recipient".into()));
    }
    let mut builder = Message::builder()
        .from(mailbox(&config.sender)?)
        .subject(subject);
    for to in config
        .recipients
        .iter()
        .flat_map(|r| r.split(','))
        .filter(|r| !r.trim().is_empty())
    {
        builder = builder.to(mailbox(to)?);
    }
    builder
        .multipart(
            MultiPart::mixed().singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .header(ContentTransferEncoding::QuotedPrintable)
                    .body(body.to_owned()),
            ),
        )
        .map_err(|e| ReportError::Message(e.to_string()))
}

/// Sends `subject` and `body` as configured, on lettre's async transport (the runtime is never
/// blocked), within `config.timeout` for the whole exchange.
pub async fn send(config: &SmtpConfig, subject: &str, body: &str) -> Result<(), ReportError> {
    let message = build_message(config, subject, body)?;
    let params = TlsParameters::new(config.host.clone()).map_err(|e| config.smtp_err(e))?;
    let tls = if config.port == 465 {
        Tls::Wrapper(params)
    } else {
        Tls::Opportunistic(params)
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.clone())
        .port(config.port)
        .tls(tls)
        .timeout(Some(config.timeout));
    if let Some(user) = &config.user {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            config.password.clone().unwrap_or_default(),
        ));
    }
    let transport = builder.build();
    // One deadline for the whole exchange: some servers leave a refused login hanging.
    let response = tokio::time::timeout(config.timeout, transport.send(message))
        .await
        .map_err(|_| config.smtp_err(format!("no answer within {:?}", config.timeout)))?
        .map_err(|e| config.smtp_err(e))?;
    tracing::info!(host = %config.host, port = config.port, code = %response.code(),
        recipients = ?config.recipients, subject, "e-mail sent");
    Ok(())
}
