//! `ballots load`: the load generator. One HTTP/1.1 keep-alive connection per simulated voter;
//! each voter loads a ballot, votes, and starts over as a new voter. Every acknowledged vote is
//! recorded per ballot and option, so `--verify` can check the final tallies exactly.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

/// Write-ins the simulated voters choose from (so equal write-ins share an option).
const WRITE_INS: [&str; 6] = [
    "Ada Lovelace",
    "ada  lovelace",
    "Grace Hopper",
    "Katherine Johnson",
    "None of the above",
    "Alan Turing",
];

/// `ballots load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The running instance
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Simultaneous voters, one connection each
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Ballots to create when --state names no file yet (or there is no --state)
    #[arg(long, default_value_t = 100)]
    ballots: usize,
    /// How long to vote, e.g. 60s, 2m
    #[arg(long, default_value = "60s")]
    duration: String,
    /// Connections are opened evenly over this long at the start
    #[arg(long, default_value = "5s")]
    ramp: String,
    /// Share of votes that are write-ins
    #[arg(long, default_value_t = 0.1)]
    write_in_share: f64,
    /// Keep the ballots in this file: created on first use, reused after
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Create the ballots (into --state) and stop
    #[arg(long, requires = "state")]
    create_only: bool,
    /// Read every tally before, close every ballot after the run (with the admin tokens of
    /// --state), and check each option got exactly the votes acknowledged (an open ballot
    /// publishes only its total; nothing else may vote on these ballots meanwhile)
    #[arg(long)]
    verify: bool,
    /// Print the summary as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Voter ids are PREFIX-CONNECTION-N (default prefix: random, so runs never collide)
    #[arg(long)]
    voter_prefix: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BallotState {
    id: String,
    admin_token: String,
    options: Vec<i64>,
}

#[derive(Debug, Deserialize)]
struct CreatedBody {
    id: String,
    admin_token: String,
    options: Vec<CreatedOption>,
}

#[derive(Debug, Deserialize)]
struct CreatedOption {
    id: i64,
}

/// The answer to a vote: the listed option's id, or (for a write-in) none, since the id of a
/// write-in would tell whether someone else had written it in.
#[derive(Debug, Deserialize)]
struct VotedBody {
    option_id: Option<i64>,
}

/// What an acknowledged vote was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Choice {
    /// A listed option, by id.
    Listed(i64),
    /// A write-in, by its index in [`WRITE_INS`].
    WriteIn(usize),
}

#[derive(Debug, Deserialize)]
struct TallyBody {
    total: i64,
    #[serde(default)]
    results_hidden: bool,
    options: Vec<TallyOption>,
}

/// A ballot's tally as read: the total, and the options with their counts once they are
/// published.
#[derive(Debug, Default)]
struct Counts {
    total: i64,
    per_option: Option<Vec<TallyOption>>,
}

#[derive(Debug, Deserialize)]
struct TallyOption {
    id: i64,
    votes: i64,
    #[serde(default)]
    text: Option<String>,
}

/// The summary of a run.
#[derive(Debug, Serialize)]
struct Summary {
    connections: usize,
    peak_connected: usize,
    ballots: usize,
    seconds: f64,
    votes: u64,
    votes_per_second: f64,
    vote_p50_ms: f64,
    vote_p99_ms: f64,
    vote_max_ms: f64,
    views: u64,
    view_p50_ms: f64,
    view_p99_ms: f64,
    errors: BTreeMap<String, u64>,
    error_count: u64,
    verified_options: Option<usize>,
    mismatches: Option<Vec<String>>,
}

/// A voter connection's tallies: latencies in microseconds (a histogram per connection would
/// cost 10 000 histograms), acknowledged votes per (ballot, option), errors by kind.
#[derive(Default)]
struct Stats {
    votes: Vec<u32>,
    views: Vec<u32>,
    acked: HashMap<(usize, Choice), u64>,
    errors: BTreeMap<String, u64>,
}

/// All connections' tallies, latencies in histograms.
struct Totals {
    votes: Histogram<u64>,
    views: Histogram<u64>,
    acked: HashMap<(usize, Choice), u64>,
    errors: BTreeMap<String, u64>,
}

fn micros(t0: Instant) -> u32 {
    u32::try_from(t0.elapsed().as_micros())
        .unwrap_or(u32::MAX)
        .max(1)
}

impl Stats {
    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }
}

impl Totals {
    fn new() -> Result<Totals> {
        Ok(Totals {
            votes: Histogram::new_with_bounds(1, u64::from(u32::MAX), 3)?,
            views: Histogram::new_with_bounds(1, u64::from(u32::MAX), 3)?,
            acked: HashMap::new(),
            errors: BTreeMap::new(),
        })
    }

    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    fn merge(&mut self, other: Stats) -> Result<()> {
        for v in other.votes {
            self.votes.record(u64::from(v))?;
        }
        for v in other.views {
            self.views.record(u64::from(v))?;
        }
        for (k, v) in other.acked {
            *self.acked.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        Ok(())
    }
}

fn parse_duration(what: &str, text: &str) -> Result<Duration> {
    Ok(coffer_keys::config::duration(what, text)?)
}

/// Runs `ballots load`.
pub fn run(a: LoadArgs) -> Result<ExitCode> {
    crate::raise_fd_limit();
    let duration = parse_duration("--duration", &a.duration)?;
    let ramp = parse_duration("--ramp", &a.ramp)?;
    if a.connections == 0 || a.ballots == 0 {
        bail!("--connections and --ballots must be at least 1");
    }
    let Some(hostport) = a.url.strip_prefix("http://") else {
        bail!("--url must be http://HOST:PORT");
    };
    let hostport = hostport.trim_end_matches('/').to_owned();
    let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .with_context(|| format!("cannot resolve {hostport}"))?
        .next()
        .with_context(|| format!("cannot resolve {hostport}"))?;
    crate::runtime()?.block_on(async move {
        let target = Target {
            addr,
            host: hostport,
        };
        let ballots = ballots(&target, &a).await?;
        if a.create_only {
            eprintln!("created {} ballots", ballots.len());
            return Ok(ExitCode::SUCCESS);
        }
        let before = if a.verify {
            Some(tallies(&target, &ballots).await?)
        } else {
            None
        };
        let prefix = match &a.voter_prefix {
            Some(p) => p.clone(),
            None => format!("v{:016x}", fastrand::u64(..)),
        };
        let (stats, seconds, peak) = drive(&target, &ballots, &a, duration, ramp, &prefix).await?;
        let mut summary = summarize(&stats, seconds, peak, a.connections, ballots.len());
        if let Some(before) = before {
            close_all(&target, &ballots).await?;
            let after = tallies(&target, &ballots).await?;
            let mismatches = verify(&ballots, &before, &after, &stats.acked);
            summary.verified_options = Some(
                after
                    .values()
                    .map(|c| c.per_option.as_ref().map_or(0, Vec::len))
                    .sum(),
            );
            summary.mismatches = Some(mismatches);
        }
        report(&summary, a.json)?;
        let bad =
            summary.error_count > 0 || summary.mismatches.as_ref().is_some_and(|m| !m.is_empty());
        Ok(if bad {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}

struct Target {
    addr: SocketAddr,
    host: String,
}

impl Target {
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

/// One request on a connection: status and body.
async fn call(
    sender: &mut SendRequest<Full<Bytes>>,
    host: &str,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<(StatusCode, Bytes)> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host);
    if body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

async fn ballots(t: &Target, a: &LoadArgs) -> Result<Vec<BallotState>> {
    if let Some(path) = &a.state
        && path.exists()
    {
        let text = std::fs::read_to_string(path)?;
        return serde_json::from_str(&text).with_context(|| format!("{}", path.display()));
    }
    let mut sender = t.connect().await.context("cannot connect")?;
    let mut out = Vec::with_capacity(a.ballots);
    for i in 0..a.ballots {
        let body = serde_json::json!({
            "measure": format!("Measure {i}: shall the town library open on Sundays?"),
            "options": ["Yes", "No", "Abstain", "Only in winter"],
            "allow_write_ins": true,
        });
        let (status, bytes) = call(
            &mut sender,
            &t.host,
            Method::POST,
            "/api/ballots",
            Some(body.to_string()),
        )
        .await?;
        if status != StatusCode::CREATED {
            bail!(
                "creating a ballot: HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let c: CreatedBody = serde_json::from_slice(&bytes)?;
        out.push(BallotState {
            id: c.id,
            admin_token: c.admin_token,
            options: c.options.iter().map(|o| o.id).collect(),
        });
    }
    if let Some(path) = &a.state {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(out)
}

async fn tallies(t: &Target, ballots: &[BallotState]) -> Result<HashMap<usize, Counts>> {
    let mut sender = t.connect().await?;
    let mut out = HashMap::new();
    for (i, b) in ballots.iter().enumerate() {
        let path = format!("/api/ballots/{}/tally", b.id);
        let (status, bytes) = call(&mut sender, &t.host, Method::GET, &path, None).await?;
        if status != StatusCode::OK {
            bail!("{path}: HTTP {status}");
        }
        let tally: TallyBody = serde_json::from_slice(&bytes)?;
        out.insert(
            i,
            Counts {
                total: tally.total,
                per_option: (!tally.results_hidden).then_some(tally.options),
            },
        );
    }
    Ok(out)
}

/// Closes every ballot (an already closed one is fine), so that its counts are published.
async fn close_all(t: &Target, ballots: &[BallotState]) -> Result<()> {
    let mut sender = t.connect().await?;
    for b in ballots {
        let path = format!("/api/ballots/{}/close", b.id);
        let req = Request::builder()
            .method(Method::POST)
            .uri(&path)
            .header(hyper::header::HOST, &t.host)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", b.admin_token),
            )
            .body(Full::new(Bytes::new()))?;
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if status != StatusCode::OK && status != StatusCode::CONFLICT {
            bail!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
        }
    }
    Ok(())
}

/// Checks the final tallies against the acknowledged votes. A ballot that had no votes before
/// the run must hold exactly the acknowledged ones per option; one that had (its counts hidden
/// while it was open) must have gained exactly as many in all, and at least the acknowledged
/// ones per option.
fn verify(
    ballots: &[BallotState],
    before: &HashMap<usize, Counts>,
    after: &HashMap<usize, Counts>,
    acked: &HashMap<(usize, Choice), u64>,
) -> Vec<String> {
    use crate::crypto::normalize_choice;
    let mut out = Vec::new();
    let none = Counts::default();
    for (i, b) in ballots.iter().enumerate() {
        let old = before.get(&i).unwrap_or(&none);
        let new = after.get(&i).unwrap_or(&none);
        let Some(lines) = &new.per_option else {
            out.push(format!("ballot {}: its counts are still hidden", b.id));
            continue;
        };
        let mine: HashMap<Choice, i64> = acked
            .iter()
            .filter(|((bi, _), _)| *bi == i)
            .map(|((_, c), n)| (*c, *n as i64))
            .collect();
        let acked_total: i64 = mine.values().sum();
        if new.total - old.total != acked_total {
            out.push(format!(
                "ballot {}: total gained {}, {acked_total} acknowledged",
                b.id,
                new.total - old.total
            ));
        }
        let exact = old.total == 0 || old.per_option.is_some();
        let old_counts: HashMap<i64, i64> = old
            .per_option
            .iter()
            .flatten()
            .map(|o| (o.id, o.votes))
            .collect();
        // Each line of the final tally: its listed id, and the write-ins equal to its text.
        let mut counted = std::collections::HashSet::new();
        for line in lines {
            let norm = line.text.as_deref().map(normalize_choice);
            let mut expected = mine.get(&Choice::Listed(line.id)).copied().unwrap_or(0);
            if mine.contains_key(&Choice::Listed(line.id)) {
                counted.insert(Choice::Listed(line.id));
            }
            for (w, text) in WRITE_INS.iter().enumerate() {
                if norm.as_deref() == Some(normalize_choice(text).as_str())
                    && let Some(n) = mine.get(&Choice::WriteIn(w))
                {
                    expected += n;
                    counted.insert(Choice::WriteIn(w));
                }
            }
            let gained = line.votes - old_counts.get(&line.id).copied().unwrap_or(0);
            if (exact && gained != expected) || (!exact && gained < expected) {
                out.push(format!(
                    "ballot {} option {}: tally gained {gained}, {expected} acknowledged",
                    b.id, line.id
                ));
            }
        }
        for c in mine.keys().filter(|c| !counted.contains(*c)) {
            out.push(format!(
                "ballot {}: acknowledged votes for {c:?} are on no line of the tally",
                b.id
            ));
        }
    }
    out
}

async fn drive(
    t: &Target,
    ballots: &[BallotState],
    a: &LoadArgs,
    duration: Duration,
    ramp: Duration,
    prefix: &str,
) -> Result<(Totals, f64, usize)> {
    let ballots = Arc::new(ballots.to_vec());
    let target = Arc::new(Target {
        addr: t.addr,
        host: t.host.clone(),
    });
    let connected = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + ramp + duration;
    let mut tasks = Vec::with_capacity(a.connections);
    for conn in 0..a.connections {
        let delay = ramp.mul_f64(conn as f64 / a.connections as f64);
        let ballots = ballots.clone();
        let target = target.clone();
        let connected = connected.clone();
        let peak = peak.clone();
        let prefix = prefix.to_owned();
        let share = a.write_in_share;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            voter(VoterCtx {
                target,
                ballots,
                deadline,
                conn,
                prefix,
                share,
                connected,
                peak,
            })
            .await
        }));
    }
    let mut total = Totals::new()?;
    for task in tasks {
        match task.await {
            Ok(Ok(s)) => total.merge(s)?,
            Ok(Err(e)) => total.error(format!("voter task: {e}")),
            Err(e) => total.error(format!("voter task: {e}")),
        }
    }
    let seconds = start.elapsed().as_secs_f64() - ramp.as_secs_f64();
    Ok((total, seconds, peak.load(Ordering::Relaxed)))
}

struct VoterCtx {
    target: Arc<Target>,
    ballots: Arc<Vec<BallotState>>,
    deadline: Instant,
    conn: usize,
    prefix: String,
    share: f64,
    connected: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

async fn voter(c: VoterCtx) -> Result<Stats> {
    let mut stats = Stats::default();
    let mut rng = fastrand::Rng::with_seed(c.conn as u64 ^ 0x9e37_79b9_7f4a_7c15);
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let mut seq = 0u64;
    while Instant::now() < c.deadline {
        let s = match sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => match c.target.connect().await {
                Ok(s) => {
                    let now = c.connected.fetch_add(1, Ordering::Relaxed) + 1;
                    c.peak.fetch_max(now, Ordering::Relaxed);
                    s
                }
                Err(e) => {
                    stats.error(format!("connect: {}", io_kind(&e)));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let mut s = s;
        let bi = rng.usize(..c.ballots.len());
        let ballot = &c.ballots[bi];
        // Load the ballot, as a voter's page would.
        let path = format!("/api/ballots/{}", ballot.id);
        let t0 = Instant::now();
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            call(&mut s, &c.target.host, Method::GET, &path, None),
        )
        .await
        {
            Ok(Ok((StatusCode::OK, _))) => {
                stats.views.push(micros(t0));
            }
            Ok(Ok((status, _))) => stats.error(format!("view: HTTP {}", status.as_u16())),
            Ok(Err(e)) => {
                stats.error(format!("view: {}", io_kind(&e)));
                c.connected.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            Err(_) => {
                stats.error("view: timeout");
                c.connected.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
        }
        // Vote, as a new voter.
        seq += 1;
        let voter = format!("{}-{}-{seq}", c.prefix, c.conn);
        let (body, choice) = if rng.f64() < c.share {
            let w = rng.usize(..WRITE_INS.len());
            (
                serde_json::json!({"voter": voter, "write_in": WRITE_INS[w]}),
                Choice::WriteIn(w),
            )
        } else {
            let option = ballot.options[rng.usize(..ballot.options.len())];
            (
                serde_json::json!({"voter": voter, "option_id": option}),
                Choice::Listed(option),
            )
        };
        let path = format!("/api/ballots/{}/votes", ballot.id);
        let t0 = Instant::now();
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            call(
                &mut s,
                &c.target.host,
                Method::POST,
                &path,
                Some(body.to_string()),
            ),
        )
        .await
        {
            Ok(Ok((StatusCode::CREATED, bytes))) => {
                stats.votes.push(micros(t0));
                match serde_json::from_slice::<VotedBody>(&bytes) {
                    Ok(v) if v.option_id.is_none_or(|o| Choice::Listed(o) == choice) => {
                        *stats.acked.entry((bi, choice)).or_default() += 1;
                    }
                    Ok(_) => stats.error("vote: counted for another option"),
                    Err(_) => stats.error("vote: unreadable answer"),
                }
            }
            Ok(Ok((status, _))) => stats.error(format!("vote: HTTP {}", status.as_u16())),
            Ok(Err(e)) => {
                stats.error(format!("vote: {}", io_kind(&e)));
                c.connected.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            Err(_) => {
                stats.error("vote: timeout");
                c.connected.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
        }
        sender = Some(s);
    }
    if sender.is_some() {
        c.connected.fetch_sub(1, Ordering::Relaxed);
    }
    Ok(stats)
}

fn io_kind(e: &anyhow::Error) -> String {
    match e.downcast_ref::<std::io::Error>() {
        Some(io) => format!("{:?}", io.kind()),
        None => e.to_string(),
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

fn summarize(s: &Totals, seconds: f64, peak: usize, connections: usize, ballots: usize) -> Summary {
    let votes = s.votes.len();
    Summary {
        connections,
        peak_connected: peak,
        ballots,
        seconds,
        votes,
        votes_per_second: votes as f64 / seconds.max(1e-9),
        vote_p50_ms: ms(&s.votes, 0.5),
        vote_p99_ms: ms(&s.votes, 0.99),
        vote_max_ms: ms(&s.votes, 1.0),
        views: s.views.len(),
        view_p50_ms: ms(&s.views, 0.5),
        view_p99_ms: ms(&s.views, 0.99),
        error_count: s.errors.values().sum(),
        errors: s.errors.clone(),
        verified_options: None,
        mismatches: None,
    }
}

fn report(s: &Summary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    println!(
        "{} voters ({} connected at peak) on {} ballots for {:.1} s",
        s.connections, s.peak_connected, s.ballots, s.seconds
    );
    println!(
        "votes: {} acknowledged, {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        s.votes, s.votes_per_second, s.vote_p50_ms, s.vote_p99_ms, s.vote_max_ms
    );
    println!(
        "views: {}, p50 {:.1} ms, p99 {:.1} ms",
        s.views, s.view_p50_ms, s.view_p99_ms
    );
    println!("errors: {}", s.error_count);
    for (k, v) in &s.errors {
        println!("  {k}: {v}");
    }
    if let Some(m) = &s.mismatches {
        println!(
            "verified: {} options, {} mismatches",
            s.verified_options.unwrap_or(0),
            m.len()
        );
        for line in m.iter().take(20) {
            println!("  {line}");
        }
    }
    Ok(())
}
