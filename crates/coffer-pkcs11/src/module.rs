//! The process-global registry of loaded PKCS#11 modules.
//!
//! `C_Initialize` may run once per module per process, and `C_Finalize` would end every session
//! of every user of the module, so each module is loaded and initialized at most once and stays
//! loaded until the process exits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

static MODULES: LazyLock<Mutex<HashMap<PathBuf, Pkcs11>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The initialized context for `path`, loading and initializing the module on first use.
///
/// The path is canonicalized first, so two spellings of one library share one context. If some
/// other code in the process already initialized the module (`CKR_CRYPTOKI_ALREADY_INITIALIZED`),
/// that initialization is used as is.
pub(crate) fn context(path: &Path) -> Result<Pkcs11, String> {
    let canonical = std::fs::canonicalize(path).map_err(|e| {
        format!(
            "cannot load the PKCS#11 module {}: {e} (is the HSM client library installed? \
             for SoftHSM2: apt-get install softhsm2)",
            path.display()
        )
    })?;
    let mut modules = MODULES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(ctx) = modules.get(&canonical) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(&canonical).map_err(|e| {
        format!(
            "cannot load the PKCS#11 module {}: {e}",
            canonical.display()
        )
    })?;
    // The library may be called from several threads (tokio's blocking pool): let it use the
    // operating system's locking primitives.
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(format!(
                "C_Initialize of the PKCS#11 module {} failed: {}",
                canonical.display(),
                crate::kek::describe(&e)
            ));
        }
    }
    modules.insert(canonical, ctx.clone());
    Ok(ctx)
}
