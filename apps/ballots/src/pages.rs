//! The web pages: server-rendered HTML forms, with one small script that refreshes the tally.
//!
//! A visitor's identity is a random cookie (`ballots_voter`), set once by the first page they
//! load and never replaced while the browser sends it. It is `SameSite=Lax`, so a voter who
//! follows a link from a mail or another site still arrives with it (a `Strict` cookie would
//! not be sent on that first navigation). The creator of a ballot gets its admin token in an
//! `HttpOnly; SameSite=Strict` cookie scoped to that ballot.
//!
//! Every form that changes something carries a token derived from the visitor's identity
//! (`csrf`), checked before anything else; and every state-changing request whose browser says
//! it comes from another site (`Sec-Fetch-Site`, `Origin`) is refused ([`same_origin`]).

use std::sync::Arc;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

use crate::api::{self, CreateBallot, MAX_VOTER, VoteRequest};
use crate::app::{App, random_id};
use crate::db::Status;
use crate::error::AppError;

/// The identity cookie of the web pages.
pub const VOTER_COOKIE: &str = "ballots_voter";

/// How long a browser keeps its identity: a year (a session cookie would be lost, and with it
/// the identity, whenever the browser is closed).
const VOTER_COOKIE_MAX_AGE: u32 = 365 * 86_400;

/// The hash domain of the form tokens.
const CSRF_DOMAIN: &[u8] = b"ballots/csrf/v1";

fn admin_cookie(id: &str) -> String {
    format!("ballots_admin_{id}")
}

fn cookie(name: String, value: String, path: String) -> Cookie<'static> {
    let mut c = Cookie::new(name, value);
    c.set_http_only(true);
    c.set_same_site(SameSite::Strict);
    c.set_path(path);
    c
}

/// A new identity cookie: `HttpOnly; SameSite=Lax; Path=/`, kept for a year.
fn voter_cookie(value: &str) -> Result<Cookie<'static>, AppError> {
    Cookie::parse(format!(
        "{VOTER_COOKIE}={value}; Path=/; Max-Age={VOTER_COOKIE_MAX_AGE}; HttpOnly; SameSite=Lax"
    ))
    .map_err(AppError::internal)
}

/// The visitor's identity: the one their browser sent, or (only when it sent none) a new one,
/// set in the returned jar.
fn identity(jar: CookieJar) -> Result<(CookieJar, String), AppError> {
    if let Some(c) = jar.get(VOTER_COOKIE) {
        let value = c.value().to_owned();
        return Ok((jar, value));
    }
    let value = random_id(16)?;
    let jar = jar.add(voter_cookie(&value)?);
    Ok((jar, value))
}

/// The form token of an identity: `SHA-256(domain ‖ identity)`. Another site can neither read
/// the `HttpOnly` identity cookie nor the pages that carry the token, so it cannot forge it.
fn csrf_token(voter: &str) -> String {
    URL_SAFE_NO_PAD.encode(coffer_core::token::hash_token(CSRF_DOMAIN, voter))
}

/// Checks a form's token against the identity the browser sent; refuses (403) without either.
fn check_csrf(jar: &CookieJar, token: Option<&str>) -> Result<String, AppError> {
    let voter = jar
        .get(VOTER_COOKIE)
        .map(|c| c.value().to_owned())
        .ok_or(AppError::Forbidden(
            "your browser sent no ballots_voter cookie: allow cookies for this site, load the \
             page again and resubmit the form from it",
        ))?;
    if voter.is_empty() || voter.len() > MAX_VOTER {
        return Err(AppError::Forbidden(
            "the ballots_voter cookie is malformed: delete it, load the page again and resubmit",
        ));
    }
    let presented = token
        .and_then(|t| URL_SAFE_NO_PAD.decode(t.trim()).ok())
        .unwrap_or_default();
    if !coffer_core::token::verify_token(CSRF_DOMAIN, &voter, &presented) {
        return Err(AppError::Forbidden(
            "this form did not come from this site's own page (its form token is missing or \
             wrong): load the page again and resubmit the form from it",
        ));
    }
    Ok(voter)
}

/// Adds `Secure` to every cookie the response sets when the request came over HTTPS
/// (`X-Forwarded-Proto: https` from the proxy in front, or `[app] secure_cookies = true`), so a
/// browser never sends the voter or admin cookie over plain HTTP. Ballots itself serves plain
/// HTTP; a client that forges the header only makes its own cookies stricter.
pub async fn secure_cookies(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let https = req
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let mut resp = next.run(req).await;
    if !app.cfg.secure_cookies.unwrap_or(https) {
        return resp;
    }
    let set: Vec<header::HeaderValue> = resp
        .headers_mut()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| {
            let text = v.to_str().unwrap_or_default();
            if text.is_empty() || text.to_ascii_lowercase().contains("; secure") {
                v.clone()
            } else {
                header::HeaderValue::from_str(&format!("{text}; Secure")).unwrap_or(v.clone())
            }
        })
        .collect();
    resp.headers_mut().remove(header::SET_COOKIE);
    for v in set {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// Refuses (403) any request other than GET and HEAD that the browser marks as coming from
/// another site: `Sec-Fetch-Site` other than `same-origin` or `none`, or an `Origin` that is not
/// this host. Requests without these headers (curl, API clients, old browsers) pass; the pages'
/// form tokens still guard them.
pub async fn same_origin(req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    let headers = req.headers();
    let site = headers
        .get("sec-fetch-site")
        .map(|v| v.to_str().unwrap_or("invalid"));
    let cross_site = site.is_some_and(|s| s != "same-origin" && s != "none");
    let foreign_origin = headers.get(header::ORIGIN).is_some_and(|origin| {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin = origin.to_str().unwrap_or("null");
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        match (authority, host) {
            (Some(a), Some(h)) => !a.eq_ignore_ascii_case(h),
            _ => true,
        }
    });
    if cross_site || foreign_origin {
        let e = AppError::Forbidden(
            "a request from another site cannot change anything here: use this site's own pages",
        );
        return if req.uri().path().starts_with("/api/") {
            e.into_response()
        } else {
            error_page(&e)
        };
    }
    next.run(req).await
}

fn form_error(e: &FormRejection) -> AppError {
    AppError::bad(
        "bad_form",
        format!(
            "the form could not be read ({}): submit it from the page",
            e.body_text()
        ),
    )
}

/// The one stylesheet of every page, inline (the pages load nothing from elsewhere).
const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;\
padding:0 1rem;line-height:1.4;color:#1b1b1b}table{border-collapse:collapse;width:100%}\
td,th{padding:.3rem;border-bottom:1px solid #ddd;text-align:left;vertical-align:middle}\
thead th{font-size:.9rem;color:#444}tbody th{font-weight:normal}tfoot th,tfoot td{font-weight:600;\
border-bottom:none}caption{text-align:left;font-weight:600;padding:.3rem 0}\
.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.err{color:#a00}\
.note{color:#555;font-size:.9rem}textarea,input[type=text]{width:100%}\
.share{display:flex;align-items:center;gap:.5rem}.bar{flex:1;min-width:4rem;height:.9rem;\
background:#e6ecf7;border-radius:.2rem;overflow:hidden}.bar>span{display:block;height:100%;\
background:#2f63c8}.pct{min-width:3.5rem;text-align:right;font-variant-numeric:tabular-nums}\
.total{font-size:1.1rem}";

/// Polls the tally part every two seconds while the ballot is open (it then shows only the
/// number of votes cast), and reloads the page once the fragment holds the final results.
const TALLY_SCRIPT: &str = "const t=document.getElementById('tally');\
if(t&&t.dataset.live==='1'){setInterval(async()=>{const r=await fetch(t.dataset.src);\
if(r.ok){const h=await r.text();if(h.includes('data-final')){location.reload();}\
else{t.innerHTML=h;}}},2000);}";

fn page(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · Ballots" }
                    style { (PreEscaped(STYLE)) }
                }
                body {
                    p.note { a href="/" { "Ballots" } " · a Coffer reference application: texts are encrypted before they reach the database" }
                    (body)
                }
            }
        }
        .into_string(),
    )
}

fn error_page(e: &AppError) -> Response {
    let (status, _) = e.status();
    if let AppError::Internal(cause) = e {
        tracing::error!(error = %cause, "page failed");
    }
    (
        status,
        page("Error", html! { h1 { "Sorry" } p.err { (e.to_string()) } }),
    )
        .into_response()
}

/// `GET /`: create a ballot; the newest ballots.
pub async fn home(State(app): State<Arc<App>>, jar: CookieJar) -> Response {
    let (jar, voter) = match identity(jar) {
        Ok(x) => x,
        Err(e) => return error_page(&e),
    };
    let recent = match app.db.recent_ballots(20).await {
        Ok(r) => r,
        Err(e) => return error_page(&e),
    };
    let mut rows = Vec::new();
    for b in recent {
        let measure = match app.ballot(&b.id).await {
            Ok(info) => match &info.cipher {
                Some(c) => c.open_measure(&b.id, &info.measure).ok(),
                None => None,
            },
            Err(_) => None,
        };
        rows.push((b.id, b.status, measure));
    }
    let page = page(
        "Ballots",
        html! {
            h1 { "New ballot" }
            form method="post" action="/ballots" {
                input type="hidden" name="csrf" value=(csrf_token(&voter));
                p { label { "Measure" br; textarea name="measure" rows="2" required {} } }
                p { label { "Options, one per line" br;
                    textarea name="options" rows="4" required {} } }
                p { label { input type="checkbox" name="allow_write_ins" value="on" checked; " Allow write-ins" } }
                p { button type="submit" { "Create ballot" } }
            }
            @if !rows.is_empty() {
                h2 { "Recent ballots" }
                ul {
                    @for (id, status, measure) in &rows {
                        li {
                            a href={ "/b/" (id) } { (measure.as_deref().unwrap_or("(text destroyed)")) }
                            " — " (status.as_str())
                        }
                    }
                }
            }
        },
    );
    (jar, page).into_response()
}

/// The create form.
#[derive(Debug, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    measure: String,
    #[serde(default)]
    options: String,
    allow_write_ins: Option<String>,
    csrf: Option<String>,
}

/// `POST /ballots`.
pub async fn create(
    State(app): State<Arc<App>>,
    jar: CookieJar,
    form: Result<Form<CreateForm>, FormRejection>,
) -> Response {
    let f = match form {
        Ok(Form(f)) => f,
        Err(e) => return error_page(&form_error(&e)),
    };
    if let Err(e) = check_csrf(&jar, f.csrf.as_deref()) {
        return error_page(&e);
    }
    let req = CreateBallot {
        measure: f.measure.replace("\r\n", "\n"),
        options: f
            .options
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        allow_write_ins: f.allow_write_ins.is_some(),
    };
    match api::create(&app, req).await {
        Ok(created) => {
            let jar = jar.add(cookie(
                admin_cookie(&created.id),
                created.admin_token,
                format!("/b/{}", created.id),
            ));
            (jar, Redirect::to(&format!("/b/{}", created.id))).into_response()
        }
        Err(e) => error_page(&e),
    }
}

/// Query of the ballot page.
#[derive(Debug, Deserialize)]
pub struct BallotQuery {
    voted: Option<String>,
    error: Option<String>,
}

/// A share of the votes, in percent with one decimal ("0.0%" when nobody voted).
fn percent(votes: i64, total: i64) -> (f64, String) {
    if total <= 0 {
        return (0.0, "0.0%".to_owned());
    }
    let p = votes as f64 * 100.0 / total as f64;
    (p, format!("{p:.1}%"))
}

/// The tally: while the ballot is open, the number of votes cast; once closed, a table of the
/// options with their votes and a bar of each one's share (the bar is decoration: the share is
/// also written out, and the bar hidden from screen readers).
fn tally_table(t: &api::Tally) -> Markup {
    if t.results_hidden {
        // While the ballot is open: the number of votes cast, nothing per option.
        return html! {
            p.total id="total" { "Votes cast so far: " strong { (t.total) } }
            p.note { "The results per option are published when the ballot closes, so that \
                      nobody can tell from a change in the counts how someone voted." }
        };
    }
    html! {
        table data-final="1" {
            caption { "Results" }
            thead {
                tr {
                    th scope="col" { "Option" }
                    th.n scope="col" { "Votes" }
                    th scope="col" { "Share" }
                }
            }
            tbody {
                @for l in &t.options {
                    @let (p, label) = percent(l.votes, t.total);
                    tr {
                        th scope="row" {
                            (l.text.as_deref().unwrap_or("(text destroyed)"))
                            @if l.write_in { " " span.note { "(write-in)" } }
                        }
                        td.n { (l.votes) }
                        td {
                            div.share {
                                span.bar aria-hidden="true" {
                                    span style={ "width:" (format!("{p:.1}")) "%" } {}
                                }
                                span.pct { (label) }
                            }
                        }
                    }
                }
            }
            tfoot {
                tr { th scope="row" { "Total" } td.n { (t.total) } td {} }
            }
        }
    }
}

/// The message of an error code the vote form redirects with (only these: the page never
/// shows text taken from its address).
fn vote_error(code: &str) -> &'static str {
    match code {
        "already_voted" => "You have already voted in this ballot.",
        "ballot_closed" => "The ballot is closed: your vote was not counted.",
        "too_long" => "The write-in is too long (200 bytes at most).",
        "empty_text" => "The write-in is empty.",
        "bad_text" => "A write-in is one line, without control characters.",
        "bad_choice" => "Choose an option.",
        "unknown_option" => "That option is not on this ballot.",
        "write_ins_not_allowed" => "This ballot takes no write-ins.",
        _ => "Your vote was not counted: please try again.",
    }
}

/// `GET /b/{id}`: the ballot, the vote form while open, and the live tally.
pub async fn ballot(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<BallotQuery>,
    jar: CookieJar,
) -> Response {
    let tally = match api::tally(&app, &id).await {
        Ok(t) => t,
        Err(e) => return error_page(&e),
    };
    let view = match api::view(&app, &id).await {
        Ok(v) => v,
        Err(e) => return error_page(&e),
    };
    let is_admin = jar.get(&admin_cookie(&id)).is_some();
    let open = tally.status == Status::Open.as_str();
    let (jar, voter) = match identity(jar) {
        Ok(x) => x,
        Err(e) => return error_page(&e),
    };
    let csrf = csrf_token(&voter);
    let body = html! {
        h1 id="measure" { (view.measure.as_deref().unwrap_or("(text destroyed after the retention period)")) }
        p.note { "Status: " strong id="status" { (tally.status) } }
        @if q.voted.is_some() { p id="voted" { "Thank you: your vote is counted." } }
        @if let Some(err) = &q.error { p.err id="error" role="alert" { (vote_error(err)) } }
        @if open {
            form method="post" action={ "/b/" (id) "/vote" } {
                input type="hidden" name="csrf" value=(csrf);
                @for (i, o) in view.options.iter().enumerate() {
                    p { label {
                        input type="radio" name="choice" value=(o.id) required[i == 0];
                        " " (o.text)
                    } }
                }
                @if view.allow_write_ins {
                    p { label {
                        input type="radio" name="choice" value="write-in";
                        " Write in: "
                        input type="text" name="write_in" maxlength="200";
                    } }
                }
                p { button id="vote" type="submit" { "Vote" } }
            }
        }
        h2 { "Tally" }
        div id="tally" aria-live="polite" data-live=(if open { "1" } else { "0" })
            data-src={ "/b/" (id) "/tally?part=1" } {
            (tally_table(&tally))
        }
        @if is_admin && open {
            form method="post" action={ "/b/" (id) "/close" } {
                input type="hidden" name="csrf" value=(csrf);
                p { button id="close" type="submit" { "Close the ballot" } }
            }
        }
        script { (PreEscaped(TALLY_SCRIPT)) }
    };
    (jar, page("Ballot", body)).into_response()
}

/// The vote form.
#[derive(Debug, Deserialize)]
pub struct VoteForm {
    choice: Option<String>,
    write_in: Option<String>,
    csrf: Option<String>,
}

/// `POST /b/{id}/vote`.
pub async fn vote(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    jar: CookieJar,
    form: Result<Form<VoteForm>, FormRejection>,
) -> Response {
    let f = match form {
        Ok(Form(f)) => f,
        Err(e) => return error_page(&form_error(&e)),
    };
    let voter = match check_csrf(&jar, f.csrf.as_deref()) {
        Ok(v) => v,
        Err(e) => return error_page(&e),
    };
    let Some(choice) = f.choice else {
        return error_page(&AppError::bad("bad_choice", "choose an option"));
    };
    let req = if choice == "write-in" {
        VoteRequest {
            voter,
            option_id: None,
            write_in: Some(f.write_in.unwrap_or_default()),
        }
    } else {
        match choice.parse() {
            Ok(option) => VoteRequest {
                voter,
                option_id: Some(option),
                write_in: None,
            },
            Err(_) => return error_page(&AppError::bad("bad_choice", "choose an option")),
        }
    };
    match api::vote(&app, &id, req).await {
        Ok(_) => Redirect::to(&format!("/b/{id}?voted=1")).into_response(),
        Err(e @ (AppError::AlreadyVoted | AppError::Closed | AppError::BadRequest { .. })) => {
            let (_, code) = e.status();
            Redirect::to(&format!("/b/{id}?error={code}")).into_response()
        }
        Err(e) => error_page(&e),
    }
}

/// Query of the tally page.
#[derive(Debug, Deserialize)]
pub struct TallyQuery {
    part: Option<String>,
}

/// `GET /b/{id}/tally`: the tally on a page of its own; with `?part=1`, the tally alone (what
/// the ballot page's script fetches).
pub async fn tally_page(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<TallyQuery>,
) -> Response {
    let t = match api::tally(&app, &id).await {
        Ok(t) => t,
        Err(e) if q.part.is_some() => return e.into_response(),
        Err(e) => return error_page(&e),
    };
    if q.part.is_some() {
        return Html(tally_table(&t).into_string()).into_response();
    }
    let body = html! {
        h1 id="measure" { (t.measure.as_deref().unwrap_or("(text destroyed after the retention period)")) }
        p.note { "Status: " strong id="status" { (t.status) } " · " a href={ "/b/" (id) } { "the ballot" } }
        div id="tally" { (tally_table(&t)) }
    };
    page("Tally", body).into_response()
}

/// The close form.
#[derive(Debug, Deserialize)]
pub struct CloseForm {
    csrf: Option<String>,
}

/// `POST /b/{id}/close` (the creator's cookie).
pub async fn close(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    jar: CookieJar,
    form: Result<Form<CloseForm>, FormRejection>,
) -> Response {
    let f = match form {
        Ok(Form(f)) => f,
        Err(e) => return error_page(&form_error(&e)),
    };
    if let Err(e) = check_csrf(&jar, f.csrf.as_deref()) {
        return error_page(&e);
    }
    let Some(token) = jar.get(&admin_cookie(&id)).map(|c| c.value().to_owned()) else {
        return error_page(&AppError::Unauthorized);
    };
    match api::close(&app, &id, &token).await {
        Ok(_) | Err(AppError::Closed) => Redirect::to(&format!("/b/{id}")).into_response(),
        Err(e) => error_page(&e),
    }
}
