//! E-mail from the server (api spec §3.2, §9.1) against a real SMTP server (aiosmtpd): the
//! invite carries a working accept-invite link, the welcome follows, forgot-password mails a
//! reset token that works once, reset-password confirms by mail; and the failure paths
//! (SMTP unset, port closed, a server that never answers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, app, app_with, mails, word_after};
use kernelci::testsuite::smtp::SmtpServer;
use serde_json::{Value, json};

const SENDER: &str = "kernelci@example.org";

async fn app_with_smtp(port: u16, password: Option<&str>, timeout: u64) -> TestApp {
    let password = password.map(str::to_owned);
    app_with(move |c| {
        c.public_base_url = Some("https://api.example.org".into());
        c.smtp_host = Some("127.0.0.1".into());
        c.smtp_port = Some(port);
        c.email_sender = Some(SENDER.into());
        c.email_password = password;
        c.smtp_timeout = timeout;
    })
    .await
}

fn claims(token: &str) -> Value {
    serde_json::from_slice(&base64_url(token.split('.').nth(1).unwrap())).unwrap()
}

fn base64_url(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = A.iter().position(|&a| a == c).unwrap() as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    out
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_mail_carries_a_working_link_and_the_welcome_follows() {
    // A server that requires AUTH: the login is EMAIL_SENDER with EMAIL_PASSWORD.
    let Some(smtp) = SmtpServer::start_with_auth(SENDER, "mail-pass") else {
        return;
    };
    let t = app_with_smtp(smtp.port(), Some("mail-pass"), 10).await;
    let r = t
        .post_as(
            &t.admin,
            "/user/invite",
            &json!({"username": "mia", "email": "mia@example.org"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let inv = r.json();
    assert_eq!(inv["email_sent"], true, "{inv}");
    assert_eq!(inv["token"], Value::Null, "the token only goes by mail");
    let m = &mails(&smtp, 1).await[0];
    assert_eq!(m.header("To"), Some("mia@example.org"));
    assert_eq!(m.header("From"), Some(SENDER));
    assert_eq!(m.header("Subject"), Some("Invitation to the KernelCI API"));
    assert!(
        smtp.log().contains(" ok"),
        "no successful AUTH: {}",
        smtp.log()
    );
    assert!(!smtp.log().contains("refused"), "{}", smtp.log());
    let token = word_after(&m.text, "https://api.example.org/user/accept-invite?token=");
    let c = claims(&token);
    assert_eq!(c["purpose"], "invite");
    assert_eq!(c["email"], "mia@example.org");
    assert_eq!(c["sub"], inv["user"]["id"]);

    // The link works: accept, then the welcome mail, then login.
    let r = t
        .req("POST", "/user/accept-invite")
        .json(&json!({"token": token, "password": "mia-pass"}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["is_verified"], true);
    let m = &mails(&smtp, 2).await[1];
    assert_eq!(m.header("To"), Some("mia@example.org"));
    assert_eq!(m.header("Subject"), Some("Welcome to the KernelCI API"));
    assert!(m.text.contains("mia"), "{}", m.text);
    t.login("mia", "mia-pass").await;

    // send_email=false sends nothing.
    let r = t
        .post_as(
            &t.admin,
            "/user/invite",
            &json!({"username": "ned", "email": "ned@example.org", "send_email": false}),
        )
        .await;
    assert_eq!(r.json()["email_sent"], false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgot_password_mails_a_reset_token_that_works_once() {
    // No EMAIL_PASSWORD: a relay without AUTH, no login attempted.
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let t = app_with_smtp(smtp.port(), None, 10).await;
    let id = t.create_user("nora", &[]).await;
    let welcome = &mails(&smtp, 1).await[0];
    assert_eq!(
        welcome.header("Subject"),
        Some("Welcome to the KernelCI API")
    );

    let r = t
        .req("POST", "/user/forgot-password")
        .json(&json!({"email": "nora@example.org"}))
        .send()
        .await;
    assert_eq!((r.status, r.json()), (202, Value::Null), "{}", r.text());
    let m = &mails(&smtp, 2).await[1];
    assert_eq!(m.header("To"), Some("nora@example.org"));
    assert_eq!(m.header("From"), Some(SENDER));
    assert_eq!(
        m.header("Subject"),
        Some("Reset Password Token for KernelCI API account")
    );
    assert!(
        m.text
            .contains("https://api.example.org/user/reset-password"),
        "{}",
        m.text
    );
    let token = word_after(&m.text, "Token: ");
    let c = claims(&token);
    assert_eq!(c["sub"], id.as_str());
    assert_eq!(c["aud"], "fastapi-users:reset");
    assert!(c["password_fgpt"].is_string());
    let exp = c["exp"].as_i64().unwrap();
    assert!((now() + 3500..=now() + 3700).contains(&exp), "exp {exp}");

    let r = t
        .req("POST", "/user/reset-password")
        .json(&json!({"token": token, "password": "nora-new"}))
        .send()
        .await;
    assert_eq!((r.status, r.json()), (200, Value::Null), "{}", r.text());
    let m = &mails(&smtp, 3).await[2];
    assert_eq!(m.header("To"), Some("nora@example.org"));
    assert_eq!(
        m.header("Subject"),
        Some("Password reset successful for KernelCI API account")
    );
    t.login("nora", "nora-new").await;
    t.req("POST", "/user/login")
        .form(&[("username", "nora"), ("password", "nora-pass")])
        .send()
        .await
        .assert_detail(400, "LOGIN_BAD_CREDENTIALS");
    // The token dies with the password it was made for.
    t.req("POST", "/user/reset-password")
        .json(&json!({"token": token, "password": "again"}))
        .send()
        .await
        .assert_detail(400, "RESET_PASSWORD_BAD_TOKEN");

    // Unknown and inactive users: 202, and no mail.
    let r = t
        .req("POST", "/user/forgot-password")
        .json(&json!({"email": "nobody@example.org"}))
        .send()
        .await;
    assert_eq!((r.status, r.json()), (202, Value::Null));
    let r = t
        .patch_as(
            &t.admin,
            &format!("/user/{id}"),
            &json!({"is_active": false}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = t
        .req("POST", "/user/forgot-password")
        .json(&json!({"email": "nora@example.org"}))
        .send()
        .await;
    assert_eq!((r.status, r.json()), (202, Value::Null));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.messages().len(), 3, "{:#?}", smtp.messages());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_fails_as_upstream_does() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let t = app_with_smtp(smtp.port(), None, 10).await;
    t.create_user("olga", &[]).await;
    mails(&smtp, 1).await;
    let r = t
        .req("POST", "/user/forgot-password")
        .json(&json!({"email": "olga@example.org"}))
        .send()
        .await;
    assert_eq!(r.status, 202);
    let token = word_after(&mails(&smtp, 2).await[1].text, "Token: ");

    // The SMTP server goes away: its port is closed.
    let port = smtp.port();
    drop(smtp);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open"
    );

    // Invite: the failure is only `email_sent: false`.
    let r = t
        .post_as(
            &t.admin,
            "/user/invite",
            &json!({"username": "pia", "email": "pia@example.org", "return_token": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["email_sent"], false);
    // Accept-invite: the welcome's failure is ignored.
    let invite_token = r.json()["token"].as_str().unwrap().to_owned();
    let r = t
        .req("POST", "/user/accept-invite")
        .json(&json!({"token": invite_token, "password": "pia-pass"}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    t.login("pia", "pia-pass").await;
    // Forgot-password: 500.
    t.req("POST", "/user/forgot-password")
        .json(&json!({"email": "olga@example.org"}))
        .send()
        .await
        .assert_detail(500, "Failed to send email");
    // Reset-password: the password changes, then the confirmation fails the request.
    t.req("POST", "/user/reset-password")
        .json(&json!({"token": token, "password": "olga-new"}))
        .send()
        .await
        .assert_detail(500, "Failed to send email");
    t.login("olga", "olga-new").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_server_that_never_answers_times_out() {
    // Accepts connections and says nothing (no greeting).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let t = app_with_smtp(port, Some("pw"), 1).await;
    let started = Instant::now();
    let r = t
        .post_as(
            &t.admin,
            "/user/invite",
            &json!({"username": "quinn", "email": "quinn@example.org"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["email_sent"], false);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the 1 s SMTP timeout took {:?}",
        started.elapsed()
    );
    holder.abort();
}

#[tokio::test]
async fn smtp_unset_is_upstreams_validation_error() {
    let t = app().await;
    let r = t
        .post_as(
            &t.admin,
            "/user/invite",
            &json!({"username": "rob", "email": "rob@example.org", "return_token": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["email_sent"], false);
    let r = t
        .req("POST", "/user/forgot-password")
        .json(&json!({"email": "rob@example.org"}))
        .send()
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let detail = r.detail();
    let text = detail.as_str().unwrap();
    assert!(
        text.starts_with("3 validation errors for EmailSettings\nsmtp_host\n  Field required"),
        "{text}"
    );
    assert!(text.contains("\nsmtp_port\n") && text.contains("\nemail_sender\n"));
    // Unknown e-mail: no mail is due, so 202 as always.
    let r = t
        .req("POST", "/user/forgot-password")
        .json(&json!({"email": "nobody@example.org"}))
        .send()
        .await;
    assert_eq!((r.status, r.json()), (202, Value::Null));
}
