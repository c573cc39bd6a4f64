//! [`Pkcs11Kek`]: a KEK that is a non-extractable AES-256 key on a PKCS#11 token.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use coffer_core::{Dek, KEY_LEN};
use coffer_keys::{Error, KekId, KekProvider, Result, WrapContext};
use cryptoki::context::{Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use zeroize::Zeroizing;

use crate::reference::{Pkcs11Ref, TokenSelector};

/// The provider kind stored in the KEK registry.
pub const KIND: &str = "pkcs11";

/// The wrap algorithm stored beside every DEK this provider wraps.
pub const ALGORITHM: &str = "pkcs11-aes256-gcm";

/// Length of the GCM IV at the start of a wrapped DEK.
pub const IV_LEN: usize = 12;

/// Length of the GCM tag at the end of a wrapped DEK.
pub const TAG_LEN: usize = 16;

/// Length of a wrapped DEK: `IV(12) ‖ ciphertext(32) ‖ tag(16)`.
pub const WRAPPED_LEN: usize = IV_LEN + KEY_LEN + TAG_LEN;

/// Idle sessions kept open per KEK; more are opened under load and closed when returned.
const MAX_IDLE_SESSIONS: usize = 16;

/// What to do about the key label named by the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMode {
    /// Use the existing key; fail if there is none.
    Open,
    /// Generate a new key on the token; fail if the label is already taken.
    Generate,
    /// Use the existing key, or generate it if the label is free.
    OpenOrGenerate,
}

/// The attributes of the KEK object on the token, as the token reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyAttributes {
    /// `CKA_LABEL`.
    pub label: String,
    /// `CKA_KEY_TYPE` is `CKK_AES`.
    pub aes: bool,
    /// `CKA_VALUE_LEN`, in bytes.
    pub value_len: Option<u64>,
    /// `CKA_TOKEN`: a persistent token object.
    pub token: bool,
    /// `CKA_PRIVATE`: usable only after login.
    pub private: bool,
    /// `CKA_SENSITIVE`: the value cannot be read in plaintext.
    pub sensitive: bool,
    /// `CKA_ALWAYS_SENSITIVE`: it never could.
    pub always_sensitive: bool,
    /// `CKA_EXTRACTABLE`: the key can be wrapped out of the token.
    pub extractable: bool,
    /// `CKA_NEVER_EXTRACTABLE`: it never could.
    pub never_extractable: bool,
    /// `CKA_ENCRYPT`.
    pub encrypt: bool,
    /// `CKA_DECRYPT`.
    pub decrypt: bool,
}

/// A KEK held on a PKCS#11 token (an HSM, or SoftHSM2 in tests): an AES-256 key generated on the
/// token, sensitive and non-extractable, that wraps DEKs with `CKM_AES_GCM` `C_Encrypt` and
/// unwraps them with `C_Decrypt`. The key never leaves the token; see the crate documentation for
/// the reference syntax and the wrapped-DEK layout.
///
/// Cheap to clone: clones share the logged-in token, the key handle and the session pool.
/// Every PKCS#11 call runs on tokio's blocking pool when a tokio runtime is present.
#[derive(Clone)]
pub struct Pkcs11Kek {
    /// The name errors report: the KEK id once [`Pkcs11Kek::with_id`] set it, else the key label.
    name: String,
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Pkcs11,
    reference: Pkcs11Ref,
    slot: Slot,
    /// The KEK's handle; found again after a lost login.
    key: Mutex<ObjectHandle>,
    pin: AuthPin,
    /// A session held open for the KEK's lifetime: PKCS#11 logs the application out of a token
    /// when its last session there closes.
    login: Mutex<Session>,
    idle: Mutex<Vec<Session>>,
}

impl fmt::Debug for Pkcs11Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Kek")
            .field("name", &self.name)
            .field("reference", &self.inner.reference.to_string())
            .field("slot", &self.inner.slot.id())
            .finish_non_exhaustive()
    }
}

/// A failure inside a blocking PKCS#11 operation, mapped to [`Error`] with the KEK's name.
enum OpError {
    /// The wrapped DEK did not authenticate.
    Auth,
    Ck(CkError),
    Core(coffer_core::Error),
    Other(String),
}

impl From<CkError> for OpError {
    fn from(e: CkError) -> Self {
        OpError::Ck(e)
    }
}

/// A short description of a cryptoki error: `C_Decrypt returned EncryptedDataInvalid`.
pub(crate) fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("C_{function:?} returned {rv:?}"),
        other => other.to_string(),
    }
}

fn rv(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// How `C_Decrypt` reports a GCM tag that does not verify. The standard code is
/// `CKR_ENCRYPTED_DATA_INVALID`; SoftHSM2 2.6 returns `CKR_GENERAL_ERROR`, other modules
/// `CKR_FUNCTION_FAILED`. `C_DecryptInit` failures (a bad key handle, a missing mechanism) and
/// lost sessions stay provider errors.
fn is_auth_failure(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::GeneralError
                | RvError::FunctionFailed,
            Function::Decrypt
        )
    )
}

/// Errors after which a fresh session (and a fresh login) may succeed.
fn is_session_lost(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::DeviceRemoved
    )
}

/// Errors after which logging in again and finding the key again may succeed: a lost session or
/// login, or a stale key handle (a private object's handle dies with the login on SoftHSM2,
/// which then answers `CKR_OBJECT_HANDLE_INVALID`, and with a token reset everywhere).
fn is_recoverable(rv: RvError) -> bool {
    is_session_lost(rv) || matches!(rv, RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid)
}

impl Pkcs11Kek {
    /// Opens the existing KEK named by a `pkcs11:` reference, reading the PIN from its
    /// `pin-env=` or `pin-file=`. Blocks on the token (module load, login, key lookup): call it
    /// once at startup.
    pub fn open(reference: &str) -> Result<Self> {
        let reference = Pkcs11Ref::parse(reference)?;
        let pin = reference.pin_source()?.read()?;
        Ok(Self::connect(&reference, pin, KeyMode::Open)?.0)
    }

    /// Generates a new KEK on the token under the reference's `key=` label (for
    /// `coffer keys init`). Fails if a key with that label already exists. Blocks.
    pub fn generate(reference: &str) -> Result<Self> {
        let reference = Pkcs11Ref::parse(reference)?;
        let pin = reference.pin_source()?.read()?;
        Ok(Self::connect(&reference, pin, KeyMode::Generate)?.0)
    }

    /// Opens the KEK, generating it first if the label is free. The flag says whether it was
    /// generated. Blocks.
    pub fn open_or_generate(reference: &str) -> Result<(Self, bool)> {
        let reference = Pkcs11Ref::parse(reference)?;
        let pin = reference.pin_source()?.read()?;
        Self::connect(&reference, pin, KeyMode::OpenOrGenerate)
    }

    /// [`Pkcs11Kek::open`] with a parsed reference and a PIN from the caller (any PIN source in
    /// the reference is ignored). Returns whether the key was generated. Blocks.
    pub fn open_with_pin(
        reference: &Pkcs11Ref,
        pin: AuthPin,
        mode: KeyMode,
    ) -> Result<(Self, bool)> {
        Self::connect(reference, pin, mode)
    }

    /// Names this KEK by its id (`main/v2`) in errors, as the KEK registry knows it.
    #[must_use]
    pub fn with_id(mut self, id: &KekId) -> Self {
        self.name = id.to_string();
        self
    }

    /// The reference this KEK was opened with.
    pub fn reference(&self) -> &Pkcs11Ref {
        &self.inner.reference
    }

    /// The id of the slot holding the token.
    pub fn slot_id(&self) -> u64 {
        self.inner.slot.id()
    }

    /// Reads the key object's attributes from the token (for `coffer keys status` and tests).
    pub async fn key_attributes(&self) -> Result<KeyAttributes> {
        self.run(|inner| inner.with_session(read_attributes)).await
    }

    fn connect(reference: &Pkcs11Ref, pin: AuthPin, mode: KeyMode) -> Result<(Self, bool)> {
        let name = reference.key.clone();
        let provider = |reason: String| Error::provider(&name, reason);
        let ctx = crate::module::context(&reference.module).map_err(Error::config)?;
        let slot = find_slot(&ctx, reference)?;

        let mechanisms = ctx
            .get_mechanism_list(slot)
            .map_err(|e| provider(describe(&e)))?;
        if !mechanisms.contains(&MechanismType::AES_GCM) {
            return Err(Error::config(format!(
                "{} of {} does not offer CKM_AES_GCM, which the pkcs11 KEK provider needs",
                reference.token,
                reference.module.display()
            )));
        }

        let login = ctx
            .open_ro_session(slot)
            .map_err(|e| provider(describe(&e)))?;
        log_in(&login, &pin).map_err(|e| match rv(&e) {
            Some(RvError::PinIncorrect) => Error::config(format!(
                "{} refused the user PIN from {}",
                reference.token,
                reference
                    .pin
                    .as_ref()
                    .map_or_else(|| "the caller".to_owned(), ToString::to_string)
            )),
            Some(RvError::PinLocked) => provider(format!(
                "the user PIN of {} is locked; the token's security officer must reset it",
                reference.token
            )),
            _ => provider(format!("login failed: {}", describe(&e))),
        })?;

        let existing = find_key(&login, &reference.key).map_err(|e| provider(describe(&e)))?;
        let (key, generated) = match (existing.as_slice(), mode) {
            ([], KeyMode::Open) => {
                return Err(Error::config(format!(
                    "no key labelled '{}' on {}; create it with \
                     `coffer keys init --kek {reference}`",
                    reference.key, reference.token
                )));
            }
            ([], KeyMode::Generate | KeyMode::OpenOrGenerate) => {
                if !mechanisms.contains(&MechanismType::AES_KEY_GEN) {
                    return Err(Error::config(format!(
                        "{} does not offer CKM_AES_KEY_GEN: generate the KEK with the \
                         HSM's own tools (AES-256, sensitive, non-extractable, label '{}')",
                        reference.token, reference.key
                    )));
                }
                // Key generation is rare (init, add-kek) and SoftHSM2 has been seen to answer
                // CKR_TEMPLATE_INCONSISTENT or CKR_GENERAL_ERROR to token-object creation while other
                // sessions work: serialise it in the process and retry a few times.
                static GENERATING: Mutex<()> = Mutex::new(());
                let _one_at_a_time = GENERATING.lock().unwrap_or_else(|p| p.into_inner());
                let mut attempt = 0;
                let key = loop {
                    let rw = ctx
                        .open_rw_session(slot)
                        .map_err(|e| provider(describe(&e)))?;
                    match rw.generate_key(&Mechanism::AesKeyGen, &key_template(&reference.key)) {
                        Ok(key) => break key,
                        Err(e)
                            if attempt < 4
                                && matches!(
                                    rv(&e),
                                    Some(
                                        RvError::TemplateInconsistent
                                            | RvError::UserNotLoggedIn
                                            | RvError::GeneralError
                                            | RvError::FunctionFailed
                                    )
                                ) =>
                        {
                            attempt += 1;
                            std::thread::sleep(std::time::Duration::from_millis(20 * attempt));
                            let _ = log_in(&login, &pin);
                        }
                        Err(e) => {
                            return Err(provider(format!("generating the KEK: {}", describe(&e))));
                        }
                    }
                };
                (key, true)
            }
            (_, KeyMode::Generate) => {
                return Err(Error::config(format!(
                    "a key labelled '{}' already exists on {}; pick another label \
                     (the existing key may still wrap DEKs)",
                    reference.key, reference.token
                )));
            }
            ([key], KeyMode::Open | KeyMode::OpenOrGenerate) => (*key, false),
            (_, KeyMode::Open | KeyMode::OpenOrGenerate) => {
                return Err(Error::config(format!(
                    "{} keys are labelled '{}' on {}; a KEK label must be unique",
                    existing.len(),
                    reference.key,
                    reference.token
                )));
            }
        };

        let attrs = read_attributes(&login, key).map_err(|e| match e {
            OpError::Ck(e) => provider(describe(&e)),
            OpError::Other(reason) => provider(reason),
            _ => provider("cannot read the key's attributes".to_owned()),
        })?;
        check_attributes(&attrs, reference)?;

        let kek = Pkcs11Kek {
            name,
            inner: Arc::new(Inner {
                ctx,
                reference: reference.clone(),
                slot,
                key: Mutex::new(key),
                pin,
                login: Mutex::new(login),
                idle: Mutex::new(Vec::new()),
            }),
        };
        Ok((kek, generated))
    }

    /// Runs a blocking PKCS#11 operation on tokio's blocking pool (inline without a runtime).
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, OpError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) => match handle.spawn_blocking(move || f(&inner)).await {
                Ok(r) => r,
                Err(e) => Err(OpError::Other(format!("the PKCS#11 task failed: {e}"))),
            },
            Err(_) => f(&inner),
        };
        result.map_err(|e| match e {
            OpError::Auth => Error::WrongKek {
                kek: self.name.clone(),
            },
            OpError::Ck(e) => Error::provider(&self.name, describe(&e)),
            OpError::Core(e) => Error::Crypto(e),
            OpError::Other(reason) => Error::provider(&self.name, reason),
        })
    }
}

fn log_in(session: &Session, pin: &AuthPin) -> Result<(), CkError> {
    match session.login(UserType::User, Some(pin)) {
        // Login state is per application and token: another KEK on this token logged in already.
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn find_slot(ctx: &Pkcs11, reference: &Pkcs11Ref) -> Result<Slot> {
    let module = reference.module.display();
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| Error::config(format!("C_GetSlotList on {module}: {}", describe(&e))))?;
    match &reference.token {
        TokenSelector::Slot(id) => slots.into_iter().find(|s| s.id() == *id).ok_or_else(|| {
            Error::config(format!(
                "the PKCS#11 module {module} has no token in slot {id}"
            ))
        }),
        TokenSelector::Label(label) => {
            let mut found = Vec::new();
            let mut labels = Vec::new();
            for slot in slots {
                let info = ctx.get_token_info(slot).map_err(|e| {
                    Error::config(format!("C_GetTokenInfo on {module}: {}", describe(&e)))
                })?;
                let this = info.label().trim_end();
                if this == label {
                    found.push(slot);
                }
                labels.push(format!("'{this}'"));
            }
            match found.as_slice() {
                [slot] => Ok(*slot),
                [] => Err(Error::config(format!(
                    "the PKCS#11 module {module} has no token labelled '{label}' (tokens: {})",
                    if labels.is_empty() {
                        "none".to_owned()
                    } else {
                        labels.join(", ")
                    }
                ))),
                several => Err(Error::config(format!(
                    "{} tokens of {module} are labelled '{label}'; name one with slot=N instead \
                     (slots {})",
                    several.len(),
                    several
                        .iter()
                        .map(|s| s.id().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
    }
}

fn find_key(session: &Session, label: &str) -> Result<Vec<ObjectHandle>, CkError> {
    session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ])
}

/// The template of a generated KEK: a private, sensitive, non-extractable AES-256 token key that
/// can only encrypt and decrypt.
fn key_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(Ulong::new(32)), // KEY_LEN bytes
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ]
}

/// Reads the key object's attributes. A secret key always has `CKA_KEY_TYPE` and an AES key
/// `CKA_VALUE_LEN`; a token that answers without them (SoftHSM2's file store can, for an object
/// another thread of this process is re-reading from disk at that moment: it clears the cached
/// attributes before loading them again) has not said what the key is, so the read is repeated a
/// few times and then reported as such, never taken for a key of another type.
fn read_attributes(session: &Session, key: ObjectHandle) -> Result<KeyAttributes, OpError> {
    const READS: u32 = 4;
    let mut read = 0;
    loop {
        read += 1;
        match read_attributes_once(session, key)? {
            Some(attrs) => return Ok(attrs),
            None if read < READS => std::thread::sleep(std::time::Duration::from_millis(5)),
            None => {
                return Err(OpError::Other(format!(
                    "the token answered {READS} reads of the key's attributes without \
                     CKA_KEY_TYPE and CKA_VALUE_LEN; it may be reloading the object, or the \
                     object is damaged: check it with the token's own tools (e.g. pkcs11-tool \
                     --list-objects)"
                )));
            }
        }
    }
}

/// One `C_GetAttributeValue`; `None` when the answer lacks the key type or length.
fn read_attributes_once(
    session: &Session,
    key: ObjectHandle,
) -> Result<Option<KeyAttributes>, OpError> {
    let attrs = session.get_attributes(
        key,
        &[
            AttributeType::Label,
            AttributeType::KeyType,
            AttributeType::ValueLen,
            AttributeType::Token,
            AttributeType::Private,
            AttributeType::Sensitive,
            AttributeType::AlwaysSensitive,
            AttributeType::Extractable,
            AttributeType::NeverExtractable,
            AttributeType::Encrypt,
            AttributeType::Decrypt,
        ],
    )?;
    let mut out = KeyAttributes::default();
    let mut key_type = None;
    for attr in attrs {
        match attr {
            Attribute::Label(l) => out.label = String::from_utf8_lossy(&l).into_owned(),
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::ValueLen(n) => out.value_len = Some(usize::from(n) as u64),
            Attribute::Token(b) => out.token = b,
            Attribute::Private(b) => out.private = b,
            Attribute::Sensitive(b) => out.sensitive = b,
            Attribute::AlwaysSensitive(b) => out.always_sensitive = b,
            Attribute::Extractable(b) => out.extractable = b,
            Attribute::NeverExtractable(b) => out.never_extractable = b,
            Attribute::Encrypt(b) => out.encrypt = b,
            Attribute::Decrypt(b) => out.decrypt = b,
            _ => {}
        }
    }
    let Some(key_type) = key_type else {
        return Ok(None);
    };
    out.aes = key_type == KeyType::AES;
    // Only AES keys must report a length; another key type is refused by `check_attributes`.
    if out.aes && out.value_len.is_none() {
        return Ok(None);
    }
    Ok(Some(out))
}

fn check_attributes(attrs: &KeyAttributes, reference: &Pkcs11Ref) -> Result<()> {
    let problem = if !attrs.aes || attrs.value_len != Some(KEY_LEN as u64) {
        Some("is not an AES-256 key")
    } else if !attrs.sensitive {
        Some("is not sensitive (CKA_SENSITIVE is false: its value can be read off the token)")
    } else if !attrs.encrypt || !attrs.decrypt {
        Some("does not allow both encryption and decryption")
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(Error::config(format!(
            "the key labelled '{}' on {} {problem}; a pkcs11 KEK must be a sensitive \
             AES-256 key with CKA_ENCRYPT and CKA_DECRYPT",
            reference.key, reference.token
        )));
    }
    if attrs.extractable {
        tracing::warn!(
            key = %reference.key,
            "the PKCS#11 KEK is extractable (CKA_EXTRACTABLE is true): it can be wrapped off the token"
        );
    }
    Ok(())
}

impl Inner {
    /// Runs `f` on a pooled session with the KEK's handle. After a lost session, login or key
    /// handle, logs in again, finds the key again and retries once on a fresh session. Only
    /// sessions whose last call succeeded go back to the pool, so no session with an unfinished
    /// operation is reused.
    fn with_session<T>(
        &self,
        f: impl Fn(&Session, ObjectHandle) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        let mut retried = false;
        loop {
            let key = *self.key.lock().unwrap_or_else(PoisonError::into_inner);
            let result = self
                .take_session()
                .map_err(OpError::Ck)
                .and_then(|session| match f(&session, key) {
                    Ok(v) => {
                        self.put_session(session);
                        Ok(v)
                    }
                    Err(e) => Err(e),
                });
            match result {
                Err(OpError::Ck(e)) if !retried && rv(&e).is_some_and(is_recoverable) => {
                    tracing::info!(
                        key = %self.reference.key,
                        error = %describe(&e),
                        "PKCS#11 session, login or key handle lost; logging in again"
                    );
                    retried = true;
                    self.recover()?;
                }
                other => return other,
            }
        }
    }

    fn take_session(&self) -> Result<Session, CkError> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match pooled {
            Some(s) => Ok(s),
            None => self.ctx.open_ro_session(self.slot),
        }
    }

    fn put_session(&self, session: Session) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_SESSIONS {
            idle.push(session);
        }
    }

    /// Logs in again (after the token was reset or the login lost), replacing the login session
    /// if it is gone, drops the idle sessions, and finds the key again by its label.
    fn recover(&self) -> Result<(), OpError> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let mut login = self.login.lock().unwrap_or_else(PoisonError::into_inner);
        match log_in(&login, &self.pin) {
            Ok(()) => {}
            Err(e) if rv(&e).is_some_and(is_session_lost) => {
                let fresh = self.ctx.open_ro_session(self.slot)?;
                log_in(&fresh, &self.pin)?;
                *login = fresh;
            }
            Err(e) => return Err(e.into()),
        }
        let key = match find_key(&login, &self.reference.key)?.as_slice() {
            [key] => *key,
            found => {
                return Err(OpError::Other(format!(
                    "after logging in again, {} keys are labelled '{}' on the token (expected 1)",
                    found.len(),
                    self.reference.key
                )));
            }
        };
        let attrs = read_attributes(&login, key)?;
        check_attributes(&attrs, &self.reference).map_err(|e| OpError::Other(e.to_string()))?;
        *self.key.lock().unwrap_or_else(PoisonError::into_inner) = key;
        Ok(())
    }
}

impl Pkcs11Kek {
    /// Seals a 32-byte key on the token with `C_Encrypt` / `CKM_AES_GCM` (a fresh random IV,
    /// 128-bit tag, the given AAD); returns the IV and `ciphertext ‖ tag`.
    pub(crate) async fn gcm_seal(
        &self,
        aad: Vec<u8>,
        key: &Dek,
    ) -> Result<([u8; IV_LEN], Vec<u8>)> {
        let key_bytes = key.clone();
        self.run(move |inner| {
            inner.with_session(|session, handle| {
                // A fresh IV per attempt: a retry never reuses one.
                let mut iv = random_iv()?;
                let params = GcmParams::new(&mut iv, &aad, TAG_BITS)?;
                let sealed = session.encrypt(
                    &Mechanism::AesGcm(params),
                    handle,
                    key_bytes.expose_secret(),
                )?;
                if sealed.len() != KEY_LEN + TAG_LEN {
                    return Err(OpError::Other(format!(
                        "C_Encrypt with CKM_AES_GCM returned {} bytes for a {KEY_LEN}-byte key; expected {}",
                        sealed.len(),
                        KEY_LEN + TAG_LEN
                    )));
                }
                Ok((iv, sealed))
            })
        })
        .await
    }

    /// Opens `ciphertext ‖ tag` sealed by [`Pkcs11Kek::gcm_seal`]; a tag that does not verify is
    /// [`Error::WrongKek`].
    pub(crate) async fn gcm_open(
        &self,
        iv: [u8; IV_LEN],
        aad: Vec<u8>,
        sealed: Vec<u8>,
    ) -> Result<Dek> {
        self.run(move |inner| {
            inner.with_session(|session, handle| {
                let mut iv = iv.to_vec();
                let params = GcmParams::new(&mut iv, &aad, TAG_BITS)?;
                let plain = session
                    .decrypt(&Mechanism::AesGcm(params), handle, &sealed)
                    .map(Zeroizing::new)
                    .map_err(|e| {
                        if is_auth_failure(&e) {
                            tracing::debug!(error = %describe(&e), "a wrapped key did not authenticate");
                            OpError::Auth
                        } else {
                            OpError::Ck(e)
                        }
                    })?;
                Dek::try_from_slice(&plain).map_err(OpError::Core)
            })
        })
        .await
    }
}

fn random_iv() -> Result<[u8; IV_LEN], OpError> {
    coffer_core::digest::random_array().map_err(OpError::Core)
}

/// The GCM tag length in bits (`TAG_LEN * 8`).
const TAG_BITS: Ulong = Ulong::new(128);

#[async_trait]
impl KekProvider for Pkcs11Kek {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn algorithm(&self) -> &'static str {
        ALGORITHM
    }

    async fn wrap(&self, dek: &Dek, ctx: &WrapContext<'_>) -> Result<Vec<u8>> {
        let (iv, sealed) = self.gcm_seal(ctx.aad()?, dek).await?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    async fn unwrap(&self, wrapped: &[u8], ctx: &WrapContext<'_>) -> Result<Dek> {
        if wrapped.len() != WRAPPED_LEN {
            // Not something this provider wrapped: it cannot authenticate.
            return Err(Error::WrongKek {
                kek: self.name.clone(),
            });
        }
        let (iv, sealed) = wrapped.split_at(IV_LEN);
        let iv: [u8; IV_LEN] = iv.try_into().map_err(|_| Error::WrongKek {
            kek: self.name.clone(),
        })?;
        self.gcm_open(iv, ctx.aad()?, sealed.to_vec()).await
    }
}
