//! `coffer keys …`: key-store administration. Parses, calls the keyring, renders; the key logic
//! is coffer-keys'.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use coffer_core::{KdfParams, ScopeId};
use coffer_keys::audit::{self, Anchor, ChainKeyState, Outcome};
use coffer_keys::config::{self, CacheConfig, Config, KekConfig, StoreConfig};
use coffer_keys::{AuditEvent, AuditFilter, KekSource, KeyStore as _, Keyring, Operation};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::{
    AddKekArgs, AuditArgs, CheckArgs, CompromiseArgs, ConfigArg, CreateScopeArgs, DestroyArgs,
    EraseSubjectArgs, InitArgs, KdfChoice, KeysCommand, ListArgs, RestoredArgs, RotateKekArgs,
    ScopesArgs,
};
use crate::input;

/// Runs one `coffer keys` subcommand on a fresh Tokio runtime.
pub fn run(cmd: &KeysCommand) -> Result<()> {
    let rt = crate::filekeys::runtime()?;
    rt.block_on(async {
        match cmd {
            KeysCommand::Init(a) => init(a).await,
            KeysCommand::CreateScope(a) => create_scopes(a).await,
            KeysCommand::Rotate(a) => rotate(a).await,
            KeysCommand::AddKek(a) => add_kek(a).await,
            KeysCommand::RotateKek(a) => rotate_kek(a).await,
            KeysCommand::Destroy(a) => destroy(a).await,
            KeysCommand::EraseSubject(a) => erase_subject(a).await,
            KeysCommand::Compromise(a) => compromise(a).await,
            KeysCommand::Restored(a) => restored(a).await,
            KeysCommand::List(a) => list(a).await,
            KeysCommand::Audit(a) => audit(a).await,
            KeysCommand::Check(a) => check(a).await,
        }
    })
}

fn load(path: &Path) -> Result<Config> {
    if !path.exists() {
        // Beside the embedded defaults of `coffer serve` there is a key store and no
        // coffer.toml: a new store (`keys init` with another key) is the wrong advice there.
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let store = crate::serve::DEFAULT_STORE
            .strip_prefix("sqlite:")
            .unwrap_or(crate::serve::DEFAULT_STORE);
        if dir.join(store).exists() {
            bail!(
                "{} does not exist, but {store} beside it is a key store already (the one `coffer \
                 serve` keeps with its embedded defaults). Describe it in a coffer.toml with \
                 `coffer keys init --store sqlite:{store} --kek env:{}` (with that variable set to \
                 the key the service uses: init checks it against the store and creates no new \
                 store), or pass --config FILE",
                path.display(),
                crate::serve::MASTER_KEY_ENV
            );
        }
    }
    Ok(Config::load(path)?)
}

/// Who the audit trail records for this command: `--actor` / `COFFER_ACTOR`, else the OS user
/// (`[audit] actor` is the service's identity, not the person's running a command).
fn actor(c: &ConfigArg) -> String {
    c.actor
        .clone()
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(config::default_actor)
}

/// The keyring of `cfg` (nothing checked or written), auditing as [`actor`].
async fn open(cfg: &Config, c: &ConfigArg) -> Result<Keyring> {
    let mut kc = cfg.keyring_config()?;
    kc.actor = actor(c);
    Ok(coffer_assembly::open_keyring_with(cfg, kc).await?)
}

/// [`open`], then the start-up proof of the KEKs (new ones registered).
async fn start(cfg: &Config, c: &ConfigArg) -> Result<Keyring> {
    let mut kc = cfg.keyring_config()?;
    kc.actor = actor(c);
    Ok(coffer_assembly::start_with(cfg, kc).await?)
}

fn scopes(names: &[String]) -> Result<Vec<ScopeId>> {
    names
        .iter()
        .map(|s| ScopeId::new(s.as_str()).map_err(|e| anyhow!("scope '{}': {e}", s.escape_debug())))
        .collect()
}

fn out(text: &str) -> Result<()> {
    input::write_stdout(text.as_bytes())
}

async fn init(a: &InitArgs) -> Result<()> {
    let path = &a.config.config;
    if path.exists() {
        bail!(
            "{} already exists; `coffer keys init` never overwrites a configuration \
             (use --config for another file)",
            path.display()
        );
    }
    let source = KekSource::parse(&a.kek)?;
    let kdf = kdf_for(&source, a.kdf)?;
    let mut cfg = Config {
        store: StoreConfig {
            url: a.store.clone(),
        },
        keks: vec![KekConfig {
            name: a.kek_name.clone(),
            version: 1,
            source: a.kek.clone(),
            kdf,
            primary: true,
        }],
        cache: CacheConfig {
            redis_url: a.redis.clone(),
            cache_key: a.cache_key.clone(),
            ..CacheConfig::default()
        },
        ..Config::default()
    };
    cfg.check()?;
    create_kek(&cfg.keks[0]).await?;
    let kr = open(&cfg, &a.config).await?;
    // A store that exists already must accept this KEK (its canary must open).
    let added = coffer_assembly::prove_keks(&kr).await?;
    kr.record(
        AuditEvent::new(kr.config().actor.clone(), Operation::Init)
            .kek(kr.keks().primary_id().to_string())
            .detail(format!("config {}", path.display())),
    )
    .await?;
    // Keep the URL exactly as given (an override from the environment is not written).
    cfg.store.url = a.store.clone();
    cfg.write_new(path)?;
    out(&format!(
        "key store ready: {} (store id {})\nKEK {} ({}){}\nwrote {}\nnext: coffer keys create-scope SCOPE\n",
        redact_url(&a.store),
        hex::encode(kr.store_id()),
        kr.keks().primary_id(),
        source.kind(),
        if added.is_empty() {
            ", already registered"
        } else {
            ", registered"
        },
        path.display()
    ))
}

/// Makes the KEK of a new `[[kek]]` entry if its provider can and it does not exist yet (a key
/// generated on an HSM token).
async fn create_kek(kek: &KekConfig) -> Result<()> {
    let id = kek.id()?;
    let created = coffer_assembly::Registry::global()
        .create_kek(kek)
        .await
        .map_err(|e| anyhow!("KEK {id}: {e}"))?;
    if created {
        eprintln!(
            "coffer: generated KEK {id} in its provider ({})",
            kek.source()?.kind()
        );
    }
    Ok(())
}

/// Hides a password in a store URL.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

async fn create_scopes(a: &CreateScopeArgs) -> Result<()> {
    let cfg = load(&a.config.config)?;
    let kr = open(&cfg, &a.config).await?;
    if let Some(path) = &a.from_file {
        return create_in_bulk(&kr, path).await;
    }
    for s in scopes(&a.scopes)? {
        let rec = kr.create_scope(&s).await?;
        out(&format!("created {s} {} (KEK {})\n", rec.version, rec.kek))?;
    }
    Ok(())
}

/// Destroyed names listed one by one before the rest are only counted.
const SHOW_REFUSED: usize = 20;

/// `create-scope --from-file`: the names read a batch at a time (memory stays bounded at
/// millions of lines), each batch created in one store transaction.
async fn create_in_bulk(kr: &Keyring, path: &Path) -> Result<()> {
    use coffer_keys::BulkCreate;
    let stdin = path.as_os_str() == "-";
    let name = if stdin {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    };
    let reader: Box<dyn std::io::BufRead> = if stdin {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(path)
            .with_context(|| format!("cannot read the scope list {name}"))?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, f))
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        // A file's lines are counted first, so the bar has an end; standard input gets a
        // counter.
        let total = if stdin {
            None
        } else {
            std::fs::File::open(path)
                .ok()
                .map(|f| std::io::BufReader::new(f).lines().count() as u64)
        };
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(if total.is_some() {
                "creating scopes {bar:40} {pos}/{len} ({per_sec}, eta {eta})"
            } else {
                "creating scopes {pos} ({per_sec})"
            })
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let (mut created, mut existed, mut lines) = (0u64, 0u64, 0u64);
    let mut refused: Vec<(String, i64)> = Vec::new();
    let mut refused_n = 0u64;
    let mut batch = Vec::with_capacity(coffer_keys::keyring::BULK_BATCH);
    let mut reader = reader.lines();
    loop {
        let line = reader.next().transpose()?;
        let done = line.is_none();
        if let Some(line) = line {
            lines += 1;
            let t = line.trim();
            if !t.is_empty() && !t.starts_with('#') {
                let scope = ScopeId::new(t).map_err(|e| {
                    anyhow!(
                        "{name} line {lines}: scope '{}': {e}; the {created} scopes created \
                         before it are kept, fix the line and run the same command again \
                         (existing scopes are skipped)",
                        t.escape_debug()
                    )
                })?;
                batch.push(scope);
            }
        }
        if batch.len() >= coffer_keys::keyring::BULK_BATCH || (done && !batch.is_empty()) {
            let outcomes = kr.create_scopes(&batch).await?;
            for (s, o) in batch.drain(..).zip(outcomes) {
                match o {
                    BulkCreate::Created { .. } => created += 1,
                    BulkCreate::Exists => existed += 1,
                    BulkCreate::Destroyed { destroyed_at_us } => {
                        refused_n += 1;
                        if refused.len() < SHOW_REFUSED {
                            refused.push((s.as_str().to_owned(), destroyed_at_us));
                        }
                    }
                }
            }
            if let Some(b) = &bar {
                b.set_position(lines);
            }
        }
        if done {
            break;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out(&format!(
        "created {created} scopes from {name}; {existed} existed already (left as they were)\n"
    ))?;
    if refused_n > 0 {
        for (s, at) in &refused {
            eprintln!(
                "coffer: not created: scope '{s}' was destroyed on {}",
                when(*at)
            );
        }
        if refused_n > refused.len() as u64 {
            eprintln!("coffer: … and {} more", refused_n - refused.len() as u64);
        }
        bail!(
            "{refused_n} scope(s) in {name} were destroyed before and were not created: the name \
             of a destroyed scope cannot be reused (its old ciphertexts must stay unreadable); \
             give those data new scope names"
        );
    }
    Ok(())
}

async fn rotate(a: &ScopesArgs) -> Result<()> {
    let cfg = load(&a.config.config)?;
    let kr = open(&cfg, &a.config).await?;
    for s in scopes(&a.scopes)? {
        let rec = kr.rotate(&s).await?;
        out(&format!(
            "rotated {s}: {} is active; older versions decrypt only\n",
            rec.version
        ))?;
    }
    Ok(())
}

fn kdf_for(source: &KekSource, choice: KdfChoice) -> Result<Option<String>> {
    Ok(match (source, choice) {
        (KekSource::Passphrase(_), KdfChoice::Pbkdf2) => {
            Some(KdfParams::pbkdf2_default()?.to_string())
        }
        (KekSource::Passphrase(_), KdfChoice::Argon2id) => {
            Some(KdfParams::argon2id_default()?.to_string())
        }
        _ => None,
    })
}

async fn add_kek(a: &AddKekArgs) -> Result<()> {
    let path = &a.config.config;
    let mut cfg = load(path)?;
    let source = KekSource::parse(&a.source)?;
    let name = match &a.name {
        Some(n) => n.clone(),
        None => cfg.primary()?.name.clone(),
    };
    let version = match a.version {
        Some(v) => v,
        None => {
            cfg.keks
                .iter()
                .filter(|k| k.name == name)
                .map(|k| k.version)
                .max()
                .unwrap_or(0)
                + 1
        }
    };
    let entry = KekConfig {
        name,
        version,
        source: a.source.clone(),
        kdf: kdf_for(&source, a.kdf)?,
        primary: a.primary,
    };
    if a.primary {
        for k in &mut cfg.keks {
            k.primary = false;
        }
    }
    cfg.keks.push(entry.clone());
    cfg.check()?;
    create_kek(&entry).await?;
    start(&cfg, &a.config).await?;
    // Replace the file atomically: write beside it, then rename over it.
    let tmp = path.with_extension("toml.new");
    let _ = std::fs::remove_file(&tmp);
    cfg.write_new(&tmp)?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    let id = entry.id()?;
    out(&format!(
        "added KEK {id} ({}){} to {}\n{}",
        source.kind(),
        if a.primary { " as primary" } else { "" },
        path.display(),
        if a.primary {
            "next: coffer keys rotate-kek (re-wraps every DEK under it)\n"
        } else {
            ""
        }
    ))
}

async fn rotate_kek(a: &RotateKekArgs) -> Result<()> {
    let cfg = load(&a.config.config)?;
    let kr = start(&cfg, &a.config).await?;
    let target = kr.keks().primary_id().clone();
    let total = kr.store().count_deks_not_under(&target).await?;
    let bar = if std::io::stderr().is_terminal() && total > 0 {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "re-wrapping under {msg} {bar:40} {pos}/{len} DEKs ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(target.to_string());
        Some(bar)
    } else {
        None
    };
    let report = kr
        .rotate_kek(a.batch as usize, |r| {
            if let Some(b) = &bar {
                b.set_position(r.rewrapped + r.skipped);
            }
        })
        .await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out(&format!(
        "{} DEKs re-wrapped under {target}; {} done by another process; none left under older KEKs\n",
        report.rewrapped, report.skipped
    ))
}

async fn destroy(a: &DestroyArgs) -> Result<()> {
    let cfg = load(&a.config.config)?;
    let list = scopes(&a.scopes)?;
    let kr = open(&cfg, &a.config).await?;
    for s in &list {
        if kr.store().scope(s).await?.is_none() {
            return Err(coffer_keys::Error::UnknownScope(s.as_str().to_owned()).into());
        }
    }
    if !a.yes {
        confirm(&list)?;
    }
    for s in &list {
        let n = kr.destroy(s).await?;
        out(&format!(
            "destroyed {s}: {n} key versions erased; its data can no longer be decrypted\n"
        ))?;
    }
    Ok(())
}

async fn erase_subject(a: &EraseSubjectArgs) -> Result<()> {
    let cfg = load(&a.config.config)?;
    let subject = ScopeId::new(a.subject.as_str())
        .map_err(|e| anyhow!("subject '{}': {e}", a.subject.escape_debug()))?;
    let kr = open(&cfg, &a.config).await?;
    let found = kr.subject_scopes(&subject).await?;
    if found.is_empty() {
        bail!(
            "nothing to erase: the key store has no scope '{subject}' and none under \
             '{subject}/'; check the name with `coffer keys list --prefix {subject}`"
        );
    }
    let live: Vec<ScopeId> = found
        .iter()
        .filter(|s| !s.is_destroyed())
        .map(|s| s.scope.clone())
        .collect();
    if live.is_empty() {
        let last = found.iter().filter_map(|s| s.destroyed_at_us).max();
        return out(&format!(
            "nothing left to erase: data subject '{subject}' was erased before ({} scope(s) \
             destroyed, the last on {})\n",
            found.len(),
            last.map(when).unwrap_or_default()
        ));
    }
    if !a.yes {
        let names: Vec<&str> = live.iter().map(ScopeId::as_str).collect();
        confirm_typed(
            &format!(
                "This erases data subject '{subject}': every key of {} scope(s) ({}). Data \
                 encrypted under them becomes unrecoverable, in every database, backup and copy.\n\
                 Type the subject name to confirm: ",
                names.len(),
                names.join(" ")
            ),
            subject.as_str(),
        )?;
    }
    let done = kr.erase_subject(&subject).await?;
    let mut text = String::new();
    for (s, n) in &done {
        text.push_str(&format!("destroyed {s}: {n} key versions erased\n"));
    }
    text.push_str(&format!(
        "erased data subject '{subject}': {} scope(s) destroyed; their data can no longer be \
         decrypted\n",
        done.len()
    ));
    out(&text)
}

async fn compromise(a: &CompromiseArgs) -> Result<()> {
    let cfg = load(&a.config.config)?;
    let kr = open(&cfg, &a.config).await?;
    for s in scopes(&a.scopes)? {
        let rec = kr.compromise(&s, &a.reason).await?;
        out(&format!(
            "{s}: {} is active; older versions are decrypt-only and flushed from the caches; \
             re-encrypt their data first (audited as an alert)\n",
            rec.version
        ))?;
    }
    Ok(())
}

async fn restored(a: &RestoredArgs) -> Result<()> {
    let cfg = load(&a.config.config)?;
    if !a.yes {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            bail!("refusing without confirmation; pass --yes in scripts");
        }
        eprint!(
            "Declare the key store restored from a backup (bumps its epoch; restart every process afterwards)? Type yes: "
        );
        std::io::stderr().flush().ok();
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        if line.trim() != "yes" {
            bail!("not confirmed; nothing changed");
        }
    }
    let kr = open(&cfg, &a.config).await?;
    let epoch = kr.mark_restored(a.gap).await?;
    let t = kr.apply_tombstones().await?;
    let ledger = if cfg.audit.tombstone_file.is_none() {
        "no tombstone ledger is configured ([audit] tombstone_file): re-destroy by hand every \
         scope destroyed since the backup (docs/KEYS.md §7.7)"
            .to_owned()
    } else {
        let mut s = format!(
            "tombstone ledger: {} entries, {} scopes destroyed again",
            t.entries,
            t.reapplied.len()
        );
        if !t.reapplied.is_empty() {
            s.push_str(&format!(" ({})", t.reapplied.join(", ")));
        }
        if t.rejected > 0 {
            s.push_str(&format!(
                "; {} lines did not verify and were skipped (another store's, or altered)",
                t.rejected
            ));
        }
        s
    };
    out(&format!(
        "store epoch is now {epoch}; new versions skip {} numbers; {ledger}; restart every \
         process, then follow docs/KEYS.md §7.7\n",
        a.gap
    ))
}

fn confirm(list: &[ScopeId]) -> Result<()> {
    let names: Vec<&str> = list.iter().map(ScopeId::as_str).collect();
    let expected = names.join(" ");
    confirm_typed(
        &format!(
            "This erases every key of {expected}. Data encrypted under them becomes unrecoverable, \
             in every database, backup and copy.\nType the scope name{} to confirm: ",
            if names.len() > 1 { "s" } else { "" }
        ),
        &expected,
    )
}

/// Asks on the terminal with `prompt` and goes on only if `expected` is typed back.
fn confirm_typed(prompt: &str, expected: &str) -> Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("refusing to destroy keys without confirmation; pass --yes in scripts");
    }
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    if line.trim() != expected {
        bail!("not confirmed; nothing was destroyed");
    }
    Ok(())
}

fn when(us: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| us.to_string())
}

async fn list(a: &ListArgs) -> Result<()> {
    let cfg = load(&a.config.config)?;
    let store = coffer_assembly::open_store(&cfg).await?;
    let wanted = scopes(&a.scopes)?;
    let mut records = Vec::new();
    let mut more = false;
    if wanted.is_empty() {
        // One page, read as one index range: never the whole store.
        let limit = a.limit as usize;
        records = store
            .list_scopes(&coffer_keys::ScopePage {
                prefix: a.prefix.clone(),
                after: a.after.clone(),
                limit: limit + 1,
            })
            .await?;
        more = records.len() > limit;
        records.truncate(limit);
    } else {
        for s in &wanted {
            records.extend(store.scope(s).await?);
        }
    }
    let mut rows = Vec::with_capacity(records.len());
    for s in records {
        let deks = store.deks(&s.scope).await?;
        rows.push((s, deks));
    }
    let next = more
        .then(|| rows.last().map(|(s, _)| s.scope.as_str().to_owned()))
        .flatten()
        .map(|last| {
            let mut cmd = String::from("coffer keys list");
            if let Some(p) = &a.prefix {
                cmd.push_str(&format!(" --prefix {}", shell_word(p)));
            }
            cmd.push_str(&format!(" --after {}", shell_word(&last)));
            if a.limit != 100 {
                cmd.push_str(&format!(" --limit {}", a.limit));
            }
            if a.json {
                cmd.push_str(" --json");
            }
            cmd
        });
    if a.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(s, deks)| {
                json!({
                    "scope": s.scope.as_str(),
                    "created": when(s.created_at_us),
                    "destroyed": s.destroyed_at_us.map(when),
                    "versions": deks.iter().map(|d| json!({
                        "version": d.version.0,
                        "state": d.state.as_str(),
                        "kek": d.kek.to_string(),
                        "wrap_algorithm": d.wrap_algorithm,
                        "key_id": hex::encode(d.key_id),
                        "encryptions": d.encryptions,
                        "created": when(d.created_at_us),
                        "state_changed": when(d.state_changed_at_us),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        if let Some(next) = &next {
            eprintln!("coffer: more scopes follow; next page: {next}");
        }
        return out(&format!("{}\n", serde_json::to_string_pretty(&v)?));
    }
    let mut text = format!(
        "{:<32} {:>7} {:<13} {:<12} {:>12}  {}\n",
        "SCOPE", "VERSION", "STATE", "KEK", "ENCRYPTIONS", "CREATED"
    );
    for (s, deks) in &rows {
        for d in deks {
            text.push_str(&format!(
                "{:<32} {:>7} {:<13} {:<12} {:>12}  {}\n",
                s.scope.as_str(),
                d.version.to_string(),
                d.state.as_str(),
                d.kek.to_string(),
                d.encryptions,
                when(d.created_at_us)
            ));
        }
    }
    if rows.is_empty() {
        if wanted.is_empty() && a.prefix.is_none() && a.after.is_none() {
            text.push_str("(no scopes; create one with `coffer keys create-scope SCOPE`)\n");
        } else {
            text.push_str("(no scopes match)\n");
        }
    }
    if let Some(next) = &next {
        text.push_str(&format!(
            "({} scopes shown; more follow, next page: {next})\n",
            rows.len()
        ));
    }
    out(&text)
}

/// `text` as one shell word (quoted when it holds anything but plain characters).
fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@+=,".contains(c))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// Parses `--since`: an age (`24h`, `7d`), a date or an RFC 3339 time.
fn since(text: &str, now_us: i64) -> Result<i64> {
    if let Ok(d) = config::duration("--since", text) {
        let back = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        return Ok(now_us.saturating_sub(back));
    }
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    let t = OffsetDateTime::parse(&full, &Rfc3339).map_err(|_| {
        anyhow!("--since '{text}': use an age (24h, 7d), a date (2026-11-01) or a time (2026-11-01T08:00:00Z)")
    })?;
    Ok(i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MIN))
}

async fn audit(a: &AuditArgs) -> Result<()> {
    let cfg = load(&a.config.config)?;
    let store = coffer_assembly::open_store(&cfg).await?;
    if a.verify {
        verify_audit(a, &cfg, store.as_ref()).await?;
    }
    let filter = AuditFilter {
        scope: a.scope.clone(),
        since_us: match &a.since {
            Some(s) => Some(since(s, store.now_us().await?)?),
            None => None,
        },
        limit: a.limit,
    };
    let records = store.audit(&filter).await?;
    let mut text = String::new();
    for r in &records {
        let e = &r.event;
        if a.json {
            text.push_str(&serde_json::to_string(&json!({
                "id": r.id,
                "at": when(r.at_us),
                "actor": e.actor,
                "operation": e.operation.as_str(),
                "scope": e.scope,
                "version": e.version,
                "kek": e.kek,
                "detail": e.detail,
                "hash": hex::encode(r.hash),
            }))?);
            text.push('\n');
        } else {
            text.push_str(&format!(
                "{:>6} {} {:<14} {:<20} {:<24} {:<5} {:<10} {}\n",
                r.id,
                when(r.at_us),
                e.operation.as_str(),
                e.actor,
                e.scope.as_deref().unwrap_or("-"),
                e.version
                    .map(|v| format!("v{v}"))
                    .unwrap_or_else(|| "-".into()),
                e.kek.as_deref().unwrap_or("-"),
                e.detail
            ));
        }
    }
    out(&text)
}

/// `coffer keys audit --verify`: the whole trail checked with the store's chain key (opened
/// through the KEKs of coffer.toml), then against the anchor if one is given.
async fn verify_audit(
    a: &AuditArgs,
    cfg: &Config,
    store: &dyn coffer_keys::KeyStore,
) -> Result<()> {
    let anchor = match (&a.anchor, &a.expect_head) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the audit anchor {}", path.display()))?;
            Some(Anchor::parse(&text).with_context(|| format!("anchor {}", path.display()))?)
        }
        (None, Some(head)) => Some(Anchor::parse(head).context("--expect-head")?),
        (None, None) => None,
    };
    // Without a usable KEK configuration the keyed records are reported as unchecked, the
    // unkeyed ones and the anchor are still checked.
    let (records, v) = match open(cfg, &a.config).await {
        Ok(kr) => kr.verify_audit().await?,
        Err(e) => {
            let records = store.audit(&AuditFilter::default()).await?;
            let scope = ScopeId::new(coffer_keys::AUDIT_SCOPE)?;
            let state = match store.dek(&scope, coffer_core::KeyVersion(1)).await? {
                None => ChainKeyState::Absent,
                Some(rec) => ChainKeyState::Unavailable {
                    created_at_us: rec.created_at_us,
                    reason: format!("{e:#}"),
                },
            };
            let v = audit::verify_trail(&records, &state)?;
            (records, v)
        }
    };
    if let Outcome::Broken(b) = &v.outcome {
        return Err(anyhow!(AuditBroken(format!(
            "audit trail broken at event {}: {} ({} events read)",
            b.id, b.reason, v.records
        ))));
    }
    let anchored = match &anchor {
        Some(anchor) => {
            if let Some(why) = anchor.check(&records) {
                return Err(anyhow!(AuditBroken(format!(
                    "audit trail does not meet its anchor: {why}"
                ))));
            }
            format!("; anchor {} met", anchor.id)
        }
        None => String::new(),
    };
    if let Outcome::Unchecked { from_id, reason } = &v.outcome {
        return Err(anyhow!(AuditUnchecked(format!(
            "cannot check the audit trail from event {from_id} on: those records are keyed with \
             the store's audit chain key, which this configuration cannot open ({reason}); \
             {} earlier events verified{anchored}. Run with the coffer.toml (and KEK access) \
             of the programs that write the trail",
            v.unkeyed
        ))));
    }
    let head = v
        .head
        .map(|(id, h)| format!("; head {id}:{}", hex::encode(h)))
        .unwrap_or_default();
    let how = if v.keyed > 0 {
        format!(
            "{} keyed with the store's chain key, {} from before it",
            v.keyed, v.unkeyed
        )
    } else {
        format!("{} unkeyed (the store has no chain key yet)", v.unkeyed)
    };
    eprintln!(
        "coffer: audit trail intact: {} events ({how}), hash chain verified{anchored}{head}",
        v.records
    );
    Ok(())
}

/// Keyed audit records this configuration cannot check (exit status 2: give it the KEKs).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuditUnchecked(pub String);

/// A broken audit chain (exit status 1: an integrity failure).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuditBroken(pub String);

async fn check(a: &CheckArgs) -> Result<()> {
    let cfg = load(&a.config.config)?;
    let kr: Keyring = open(&cfg, &a.config).await?;
    let mut bad = Vec::new();
    let mut unreachable = None;
    let results = kr.check_keks().await?;
    let known: Vec<_> = results.iter().map(|(id, _)| id.clone()).collect();
    for (id, r) in &results {
        match r {
            Ok(()) => out(&format!("ok       {id}\n"))?,
            Err(e) => {
                bad.push(id.to_string());
                out(&format!("FAILED   {id}: {e}\n"))?;
                if matches!(
                    e,
                    coffer_keys::Error::Provider { .. } | coffer_keys::Error::Store(_)
                ) {
                    unreachable = Some(e.clone());
                }
            }
        }
    }
    for id in kr.keks().ids().filter(|id| !known.contains(id)) {
        out(&format!(
            "new      {id} (registered by the next `coffer keys rotate-kek`)\n"
        ))?;
    }
    if let Some(e) = unreachable {
        return Err(e.into());
    }
    if !bad.is_empty() {
        return Err(coffer_keys::Error::WrongKek {
            kek: bad.join("', '"),
        }
        .into());
    }
    // The canaries open; now the DEKs themselves (one wrapped under a wrong key has a good
    // canary beside it).
    let deks = kr
        .check_deks(if a.all { None } else { Some(a.sample) })
        .await?;
    for (scope, version, e) in &deks.failed {
        out(&format!("FAILED   {scope} {version}: {e}\n"))?;
    }
    out(&format!(
        "{} active DEK(s) of {} scope(s) open{}\n",
        deks.checked,
        if deks.sampled {
            format!(
                "{} sampled of {}",
                deks.checked as usize + deks.failed.len(),
                deks.scopes
            )
        } else {
            deks.scopes.to_string()
        },
        if deks.sampled {
            " (pass --all to check every scope)"
        } else {
            ""
        }
    ))?;
    if let Some((_, _, first)) = deks.failed.first() {
        let names: Vec<&str> = deks.failed.iter().map(|(s, _, _)| s.as_str()).collect();
        return Err(anyhow!(DeksUnreadable {
            kind: first.kind(),
            text: format!(
                "the configured KEKs cannot open the active DEK of {} scope(s): {}; data written \
                 under them cannot be read with this configuration. Configure the key they were \
                 wrapped under, or rotate each (`coffer keys rotate SCOPE`) once the right key \
                 is back",
                names.len(),
                names.join(", ")
            ),
        }));
    }
    Ok(())
}

/// Active DEKs the configured KEKs cannot open (exit status of the first failure: 1 for a
/// wrong key, 2 for a KEK missing from the configuration, 3 for an unreachable provider).
#[derive(Debug)]
pub struct DeksUnreadable {
    /// The first failure's kind.
    pub kind: coffer_core::ErrorKind,
    /// The message.
    pub text: String,
}

impl std::fmt::Display for DeksUnreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for DeksUnreadable {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_hide_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("sqlite:keys.db"), "sqlite:keys.db");
    }

    #[test]
    fn since_takes_ages_dates_and_times() {
        let now = 1_800_000_000_000_000;
        assert_eq!(since("1h", now).unwrap(), now - 3_600_000_000);
        assert_eq!(since("2026-11-01", now).unwrap(), 1_793_491_200_000_000);
        assert!(since("2026-11-01T08:00:00Z", now).is_ok());
        assert!(since("yesterday", now).is_err());
    }
}
