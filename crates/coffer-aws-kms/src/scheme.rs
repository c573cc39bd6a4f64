//! [`Scheme`]: this crate as the `aws-kms:` KEK provider of coffer-assembly's registry.

use std::sync::Arc;

use async_trait::async_trait;
use coffer_keys::files::FileKeyring;
use coffer_keys::{KekId, KekProvider, KekScheme, Result};

use crate::{AwsKmsFileKeyring, AwsKmsKek, AwsKmsReference};

/// The `aws-kms:` scheme: KEKs in AWS KMS (references as in [`AwsKmsReference`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Scheme;

#[async_trait]
impl KekScheme for Scheme {
    fn scheme(&self) -> &'static str {
        "aws-kms"
    }

    fn check_reference(&self, reference: &str) -> Result<()> {
        AwsKmsReference::parse(reference).map(|_| ())
    }

    async fn open_kek(&self, reference: &str, id: &KekId) -> Result<Arc<dyn KekProvider>> {
        Ok(Arc::new(
            AwsKmsKek::from_reference(reference).await?.with_kek_id(id),
        ))
    }

    /// KMS EDKs are filed under the key ARN, so `key_name` does not apply.
    async fn open_file_keyring(
        &self,
        reference: &str,
        _key_name: Option<&str>,
    ) -> Result<Box<dyn FileKeyring>> {
        let kek = AwsKmsKek::from_reference(reference).await?;
        Ok(Box::new(AwsKmsFileKeyring::new(kek)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_matches_the_reference_prefix() {
        assert_eq!(format!("{}:", Scheme.scheme()), crate::SCHEME);
        assert!(Scheme.check_reference("aws-kms:alias/coffer").is_ok());
        assert!(Scheme.check_reference("aws-kms:").is_err());
    }
}
