//! The web pages: server-rendered HTML forms, with one small script that refreshes the tally.
//!
//! Voters are identified by a random cookie (`ballots_voter`); the creator of a ballot gets its
//! admin token in a cookie scoped to that ballot. Both are `HttpOnly; SameSite=Strict`, which
//! also keeps other sites from posting the forms.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

use crate::api::{self, CreateBallot, VoteRequest};
use crate::app::{App, random_id};
use crate::db::Status;
use crate::error::AppError;

const VOTER_COOKIE: &str = "ballots_voter";

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

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;\
padding:0 1rem;line-height:1.4}table{border-collapse:collapse;width:100%}td,th{padding:.3rem;\
border-bottom:1px solid #ddd;text-align:left}.n{text-align:right}.err{color:#a00}\
.note{color:#555;font-size:.9rem}textarea,input[type=text]{width:100%}";

/// Polls the tally fragment every two seconds while the ballot is open (it then shows only the
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
pub async fn home(State(app): State<Arc<App>>) -> Response {
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
    page(
        "Ballots",
        html! {
            h1 { "New ballot" }
            form method="post" action="/ballots" {
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
    )
    .into_response()
}

/// The create form.
#[derive(Debug, Deserialize)]
pub struct CreateForm {
    measure: String,
    options: String,
    allow_write_ins: Option<String>,
}

/// `POST /ballots`.
pub async fn create(
    State(app): State<Arc<App>>,
    jar: CookieJar,
    Form(f): Form<CreateForm>,
) -> Response {
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

fn tally_table(t: &api::Tally) -> Markup {
    if t.results_hidden {
        // While the ballot is open: the number of votes cast, nothing per option.
        return html! {
            p id="total" { "Votes cast so far: " strong { (t.total) } }
            p.note { "The results per option are published when the ballot closes, so that \
                      nobody can tell from a change in the counts how someone voted." }
        };
    }
    html! {
        table data-final="1" {
            tr { th { "Option" } th { "Votes" } }
            @for l in &t.options {
                tr {
                    td {
                        (l.text.as_deref().unwrap_or("(text destroyed)"))
                        @if l.write_in { " " span.note { "(write-in)" } }
                    }
                    td.n { (l.votes) }
                }
            }
            tr { th { "Total" } th.n { (t.total) } }
        }
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
    let jar = if jar.get(VOTER_COOKIE).is_none() {
        match random_id(16) {
            Ok(v) => jar.add(cookie(VOTER_COOKIE.to_owned(), v, "/".to_owned())),
            Err(e) => return error_page(&e),
        }
    } else {
        jar
    };
    let body = html! {
        h1 id="measure" { (view.measure.as_deref().unwrap_or("(text destroyed after the retention period)")) }
        p.note { "Status: " strong id="status" { (tally.status) } }
        @if q.voted.is_some() { p id="voted" { "Thank you: your vote is counted." } }
        @if let Some(err) = &q.error { p.err id="error" { (err) } }
        @if open {
            form method="post" action={ "/b/" (id) "/vote" } {
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
        div id="tally" data-live=(if open { "1" } else { "0" }) data-src={ "/b/" (id) "/tally" } {
            (tally_table(&tally))
        }
        @if is_admin && open {
            form method="post" action={ "/b/" (id) "/close" } {
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
    choice: String,
    write_in: Option<String>,
}

/// `POST /b/{id}/vote`.
pub async fn vote(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    jar: CookieJar,
    Form(f): Form<VoteForm>,
) -> Response {
    let Some(voter) = jar.get(VOTER_COOKIE).map(|c| c.value().to_owned()) else {
        // No cookie yet (cookies off, or the form posted from elsewhere): back to the page,
        // which sets one.
        return Redirect::to(&format!("/b/{id}?error=Please+vote+from+the+ballot+page"))
            .into_response();
    };
    let req = if f.choice == "write-in" {
        VoteRequest {
            voter,
            option_id: None,
            write_in: Some(f.write_in.unwrap_or_default()),
        }
    } else {
        match f.choice.parse() {
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
            let query = serde_urlencoded::to_string([("error", e.to_string())]).unwrap_or_default();
            Redirect::to(&format!("/b/{id}?{query}")).into_response()
        }
        Err(e) => error_page(&e),
    }
}

/// `GET /b/{id}/tally`: the tally table alone (what the page's script fetches).
pub async fn tally_fragment(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match api::tally(&app, &id).await {
        Ok(t) => Html(tally_table(&t).into_string()).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /b/{id}/close` (the creator's cookie).
pub async fn close(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    jar: CookieJar,
) -> Response {
    let Some(token) = jar.get(&admin_cookie(&id)).map(|c| c.value().to_owned()) else {
        return error_page(&AppError::Unauthorized);
    };
    match api::close(&app, &id, &token).await {
        Ok(_) | Err(AppError::Closed) => Redirect::to(&format!("/b/{id}")).into_response(),
        Err(e) => error_page(&e),
    }
}
