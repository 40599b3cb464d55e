//! The users group: login, tokens, invites, users and groups.

use super::Access::{Public, Superuser, User, Verified};
use super::{Group, Route, route, schema};
use crate::handler;
use crate::routes::{pages, users};
use crate::schemas::params::PAGE_1000;
use crate::schemas::users::{
    ApiToken, ForgotPassword, GroupCreate, Invite, InviteAnswer, InviteUrls, LoginForm, Page,
    Register, TokenPassword, TokenRequest, UpdatePasswordForm, UserPatch,
};
use kernelci::models::{UserGroup, UserRead};

/// The routes.
pub const GROUP: Group = Group {
    tag: "users",
    description: "Login, tokens, invites, users and groups",
    routes: ROUTES,
};

const ROUTES: &[Route] = &[
    route(
        "POST",
        "/user/login",
        "Log in (OAuth2 password form); returns a bearer token (429: too many failed \
         attempts from this address, see `--login-rate`)",
        Public,
        handler!(|app, req, p| users::login(app, req).await),
    )
    .form(schema::<LoginForm>)
    .returns(schema::<crate::schemas::users::AccessToken>)
    .errors(&[429]),
    route(
        "POST",
        "/user/logout",
        "Log out: revokes the token used",
        Verified,
        handler!(|app, req, p| users::logout(app, req).await),
    )
    .ok(204),
    route(
        "POST",
        "/user/register",
        "Disabled: use /user/invite (404 for a valid body)",
        Superuser,
        handler!(|app, req, p| users::register(app, req).await),
    )
    .json(schema::<Register>)
    .returns(schema::<UserRead>)
    .errors(&[404]),
    route(
        "GET",
        "/user/invite",
        "Invite page",
        Public,
        handler!(|app, req, p| Ok(pages::invite_page(false))),
    )
    .html(),
    route(
        "POST",
        "/user/invite",
        "Invite a user; e-mails the accept-invite link when SMTP is configured",
        Superuser,
        handler!(|app, req, p| users::invite(app, req).await),
    )
    .json(schema::<Invite>)
    .returns(schema::<InviteAnswer>),
    route(
        "GET",
        "/user/accept-invite",
        "Accept-invite page",
        Public,
        handler!(|app, req, p| Ok(pages::invite_page(true))),
    )
    .html(),
    route(
        "POST",
        "/user/accept-invite",
        "Accept an invite and set a password",
        Public,
        handler!(|app, req, p| users::accept_invite(app, req).await),
    )
    .json(schema::<TokenPassword>)
    .returns(schema::<UserRead>)
    .errors(&[404]),
    route(
        "GET",
        "/user/invite/url",
        "The invite URLs",
        Superuser,
        handler!(|app, req, p| users::invite_url(app, req).await),
    )
    .returns(schema::<InviteUrls>),
    route(
        "POST",
        "/user/forgot-password",
        "Request a password reset: the token goes by e-mail (400: SMTP not configured; \
         429: too many requests from this address, see `--forgot-password-rate`; 500: the \
         e-mail could not be sent)",
        Public,
        handler!(|app, req, p| users::forgot_password(app, req).await),
    )
    .json(schema::<ForgotPassword>)
    .returns(schema::<()>)
    .ok(202)
    .errors(&[429, 500]),
    route(
        "POST",
        "/user/reset-password",
        "Reset a password with a reset token; a confirmation e-mail follows (500: it could \
         not be sent)",
        Public,
        handler!(|app, req, p| users::reset_password(app, req).await),
    )
    .json(schema::<TokenPassword>)
    .returns(schema::<UserRead>)
    .errors(&[500]),
    route(
        "POST",
        "/user/update-password",
        "Change a password (form; failed checks count as failed logins: 429)",
        Public,
        handler!(|app, req, p| users::update_password(app, req).await),
    )
    .form(schema::<UpdatePasswordForm>)
    .returns(schema::<()>)
    .errors(&[429]),
    route(
        "POST",
        "/user/tokens",
        "Create a named, revocable API token",
        User,
        handler!(|app, req, p| users::create_token(app, req).await),
    )
    .json(schema::<TokenRequest>)
    .returns(schema::<ApiToken>),
    route(
        "DELETE",
        "/user/tokens/{jti}",
        "Revoke an API token",
        User,
        handler!(|app, req, p| users::revoke_token(app, req, p[0]).await),
    )
    .ok(204)
    .errors(&[404]),
    route(
        "GET",
        "/whoami",
        "The current user",
        Verified,
        handler!(|app, req, p| users::whoami(app, req).await),
    )
    .returns(schema::<UserRead>),
    route(
        "PATCH",
        "/user/me",
        "Update the current user",
        User,
        handler!(|app, req, p| users::patch_me(app, req).await),
    )
    .json(schema::<UserPatch>)
    .returns(schema::<UserRead>),
    route(
        "GET",
        "/user/{id}",
        "A user",
        User,
        handler!(|app, req, p| users::get_user(app, req, p[0]).await),
    )
    .returns(schema::<UserRead>)
    .errors(&[404]),
    route(
        "DELETE",
        "/user/{id}",
        "Delete a user",
        Superuser,
        handler!(|app, req, p| users::delete_user(app, req, p[0]).await),
    )
    .returns(schema::<()>)
    .errors(&[404]),
    route(
        "PATCH",
        "/user/{user_id}",
        "Update a user",
        Superuser,
        handler!(|app, req, p| users::patch_user(app, req, p[0]).await),
    )
    .json(schema::<UserPatch>)
    .returns(schema::<UserRead>)
    .errors(&[404]),
    route(
        "GET",
        "/users",
        "Users (paginated)",
        User,
        handler!(|app, req, p| users::list_users(app, req).await),
    )
    .query(&[PAGE_1000])
    .returns(schema::<Page<UserRead>>),
    route(
        "GET",
        "/user-groups",
        "User groups (paginated)",
        Superuser,
        handler!(|app, req, p| users::list_groups(app, req).await),
    )
    .query(&[PAGE_1000])
    .returns(schema::<Page<UserGroup>>),
    route(
        "POST",
        "/user-groups",
        "Create a user group",
        Superuser,
        handler!(|app, req, p| users::create_group(app, req).await),
    )
    .json(schema::<GroupCreate>)
    .returns(schema::<UserGroup>),
    route(
        "GET",
        "/user-groups/{group_id}",
        "A user group",
        Superuser,
        handler!(|app, req, p| users::get_group(app, req, p[0]).await),
    )
    .returns(schema::<UserGroup>)
    .errors(&[404]),
    route(
        "DELETE",
        "/user-groups/{group_id}",
        "Delete a user group (409 while users are in it)",
        Superuser,
        handler!(|app, req, p| users::delete_group(app, req, p[0]).await),
    )
    .ok(204)
    .errors(&[404, 409]),
];
