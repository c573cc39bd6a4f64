//! JSON over HTTP to the encryption service (`coffer serve`, or its router in process): every
//! answer as (status, body), the body as a string when it is not JSON, and the request shapes
//! the tests send again and again (docs/SERVICE.md describes the endpoints).

use serde_json::{Value, json};

/// A client of one service at `base` (`http://127.0.0.1:PORT`).
pub struct Client {
    /// The HTTP client, for requests the helpers below do not cover.
    pub http: reqwest::Client,
    /// The service's base URL.
    pub base: String,
}

impl Client {
    /// A client of the service at `base`.
    pub fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: base.to_owned(),
        }
    }

    /// `method` on `path`, with `token` as the bearer and `body` as JSON if given.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        answer(r.send().await.expect("the service answers")).await
    }

    /// POSTs `body` as JSON.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    /// POSTs `body` as sent, with `Content-Type: application/json`.
    pub async fn post_raw(&self, path: &str, token: &str, body: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("the service answers");
        answer(resp).await
    }

    /// A GET, with `token` as the bearer if given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    /// A GET with `token` as the bearer, the response as it came (status, headers).
    pub async fn get_response(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("the service answers")
    }

    /// POSTs `items` in the utf8 encoding to `/v1/scopes/{scope}/{op}` (`encrypt`, `decrypt`,
    /// `blind-index`).
    pub async fn utf8(
        &self,
        op: &str,
        scope: &str,
        token: &str,
        items: impl Into<Value>,
    ) -> (u16, Value) {
        self.post_utf8(&format!("/v1/scopes/{scope}/{op}"), token, items)
            .await
    }

    /// POSTs `items` in the utf8 encoding to `path`.
    pub async fn post_utf8(
        &self,
        path: &str,
        token: &str,
        items: impl Into<Value>,
    ) -> (u16, Value) {
        let body = json!({"encoding": "utf8", "items": items.into()});
        self.post(path, token, body).await
    }

    /// Encrypts one value, `plaintext` under column `c`, in `scope`.
    pub async fn encrypt_one(&self, token: &str, scope: &str, plaintext: &str) -> (u16, Value) {
        let items = json!([{"column": "c", "plaintext": plaintext}]);
        self.utf8("encrypt", scope, token, items).await
    }

    /// `POST /v1/admin/scopes`: `scope` for `tenant`.
    pub async fn admin_scope(&self, token: &str, scope: &str, tenant: &str) -> (u16, Value) {
        let body = json!({"scope": scope, "tenant": tenant});
        self.post("/v1/admin/scopes", token, body).await
    }

    /// /metrics as text, scraped with `token`.
    pub async fn metrics(&self, token: &str) -> String {
        let (s, m) = self.get("/metrics", Some(token)).await;
        assert_eq!(s, 200, "{m}");
        m.as_str().expect("/metrics is text").to_owned()
    }
}

/// The status and the body: JSON, or the text as a JSON string.
async fn answer(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("a body");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// The answer is an error with this status and code, and a message that says something.
#[track_caller]
pub fn expect_error(r: &(u16, Value), status: u16, code: &str) {
    assert_eq!(r.0, status, "{}", r.1);
    assert_eq!(r.1["error"]["code"], code, "{}", r.1);
    assert!(
        r.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.len() > 10),
        "no useful message: {}",
        r.1
    );
}

/// The answer is a 429 with a Retry-After of at least a second and the error `code`.
pub async fn expect_retry_after(r: reqwest::Response, code: &str) {
    assert_eq!(r.status().as_u16(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("Retry-After is text")
        .parse()
        .expect("Retry-After is a number of seconds");
    assert!(wait >= 1);
    let body: Value = r.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], code);
}
