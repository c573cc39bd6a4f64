//! The `aws-kms:` key reference: `aws-kms:KEY[;region=REGION][;endpoint=URL]`.
//!
//! `KEY` is what KMS accepts as a `KeyId`: a key id (`1234abcd-12ab-34cd-56ef-1234567890ab` or a
//! multi-Region `mrk-…` id), a key ARN, an alias (`alias/coffer-main`) or an alias ARN. Parsing is
//! strict: unknown or repeated options, empty values and malformed keys, regions or endpoints are
//! refused with a message that says what was expected.

use std::fmt;
use std::str::FromStr;

use coffer_keys::{Error, Result};

/// The scheme every reference starts with.
pub const SCHEME: &str = "aws-kms:";

/// A parsed `aws-kms:` reference. [`fmt::Display`] writes it back in the same syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsKmsReference {
    key: String,
    region: Option<String>,
    endpoint: Option<String>,
}

impl AwsKmsReference {
    /// Parses `aws-kms:KEY[;region=REGION][;endpoint=URL]`.
    pub fn parse(reference: &str) -> Result<Self> {
        let Some(rest) = reference.strip_prefix(SCHEME) else {
            return Err(bad(
                reference,
                "it must start with 'aws-kms:', e.g. aws-kms:alias/coffer-main",
            ));
        };
        let mut parts = rest.split(';');
        let key = parts.next().unwrap_or_default();
        check_key(reference, key)?;
        let mut region: Option<String> = None;
        let mut endpoint: Option<String> = None;
        for part in parts {
            let Some((name, value)) = part.split_once('=') else {
                return Err(bad(
                    reference,
                    format!(
                        "option '{}' must be NAME=VALUE (region=..., endpoint=...)",
                        part.escape_debug()
                    ),
                ));
            };
            if value.is_empty() {
                return Err(bad(
                    reference,
                    format!("option '{name}' has an empty value"),
                ));
            }
            let slot = match name {
                "region" => {
                    check_region(reference, value)?;
                    &mut region
                }
                "endpoint" => {
                    check_endpoint(reference, value)?;
                    &mut endpoint
                }
                _ => {
                    return Err(bad(
                        reference,
                        format!(
                            "unknown option '{}'; the options are region=REGION and endpoint=URL",
                            name.escape_debug()
                        ),
                    ));
                }
            };
            if slot.is_some() {
                return Err(bad(reference, format!("option '{name}' is given twice")));
            }
            *slot = Some(value.to_owned());
        }
        if let (Some(arn_region), Some(region)) = (arn_region(key), region.as_deref()) {
            if arn_region != region {
                return Err(bad(
                    reference,
                    format!(
                        "the key ARN is in region '{arn_region}' but region={region} was given; \
                         drop region= or make them agree"
                    ),
                ));
            }
        }
        Ok(AwsKmsReference {
            key: key.to_owned(),
            region,
            endpoint,
        })
    }

    /// The key id, key ARN, alias or alias ARN, passed to KMS as `KeyId`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The region given with `region=`, or else the one in a key or alias ARN. `None` means the
    /// AWS configuration decides (`AWS_REGION`, the profile).
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref().or_else(|| arn_region(&self.key))
    }

    /// The endpoint override given with `endpoint=` (moto, LocalStack, a VPC endpoint). `None`
    /// means the AWS configuration decides (`AWS_ENDPOINT_URL_KMS`, `AWS_ENDPOINT_URL`, or the
    /// regional KMS endpoint).
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }
}

impl FromStr for AwsKmsReference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        AwsKmsReference::parse(s)
    }
}

impl fmt::Display for AwsKmsReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.key)?;
        if let Some(region) = &self.region {
            write!(f, ";region={region}")?;
        }
        if let Some(endpoint) = &self.endpoint {
            write!(f, ";endpoint={endpoint}")?;
        }
        Ok(())
    }
}

fn bad(reference: &str, why: impl fmt::Display) -> Error {
    Error::config(format!(
        "invalid AWS KMS key reference '{}': {why}",
        reference.escape_debug()
    ))
}

/// The region of a key or alias ARN (`arn:PARTITION:kms:REGION:ACCOUNT:…`), if `key` is one.
fn arn_region(key: &str) -> Option<&str> {
    let mut fields = key.strip_prefix("arn:")?.splitn(5, ':');
    let _partition = fields.next()?;
    let _service = fields.next()?;
    fields.next()
}

fn check_key(reference: &str, key: &str) -> Result<()> {
    const EXPECTED: &str =
        "expected a key id (UUID or mrk-…), a key ARN, alias/NAME or an alias ARN after 'aws-kms:'";
    if key.is_empty() {
        return Err(bad(reference, format!("no key; {EXPECTED}")));
    }
    if let Some(arn) = key.strip_prefix("arn:") {
        let fields: Vec<&str> = arn.splitn(5, ':').collect();
        let [partition, service, region, account, resource] = fields[..] else {
            return Err(bad(
                reference,
                "a KMS ARN has the form arn:aws:kms:REGION:ACCOUNT:key/ID or …:alias/NAME",
            ));
        };
        let partition_ok = partition == "aws"
            || partition.strip_prefix("aws-").is_some_and(|p| {
                !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            });
        if !partition_ok {
            return Err(bad(
                reference,
                format!("'{partition}' is not an AWS partition (aws, aws-cn, aws-us-gov, …)"),
            ));
        }
        if service != "kms" {
            return Err(bad(
                reference,
                format!("the ARN names service '{service}', not kms"),
            ));
        }
        check_region(reference, region)?;
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(reference, "the ARN's account must be 12 digits"));
        }
        return if let Some(id) = resource.strip_prefix("key/") {
            check_key_id(reference, id)
        } else if resource.starts_with("alias/") {
            check_alias(reference, resource)
        } else {
            Err(bad(reference, "a KMS ARN must end in key/ID or alias/NAME"))
        };
    }
    if key.starts_with("alias/") {
        return check_alias(reference, key);
    }
    if key.contains('/') || key.contains(':') {
        return Err(bad(reference, EXPECTED));
    }
    check_key_id(reference, key)
}

/// A key id: a UUID (lowercase or uppercase hex) or a multi-Region key id `mrk-` + 32 hex digits.
fn check_key_id(reference: &str, id: &str) -> Result<()> {
    let is_uuid = {
        let groups: Vec<&str> = id.split('-').collect();
        groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
            && groups
                .iter()
                .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let is_mrk = id
        .strip_prefix("mrk-")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if is_uuid || is_mrk {
        Ok(())
    } else {
        Err(bad(
            reference,
            format!(
                "'{}' is not a KMS key id (a UUID such as 1234abcd-12ab-34cd-56ef-1234567890ab, \
                 or mrk- and 32 hex digits); aliases are written alias/NAME",
                id.escape_debug()
            ),
        ))
    }
}

/// `alias/NAME`: 1–250 characters of `[A-Za-z0-9/_-]`, not one of the AWS managed `alias/aws/…`
/// keys (only AWS services may use those).
fn check_alias(reference: &str, alias: &str) -> Result<()> {
    let name = alias.strip_prefix("alias/").unwrap_or_default();
    let ok = !name.is_empty()
        && alias.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'));
    if !ok {
        return Err(bad(
            reference,
            format!(
                "'{}' is not a KMS alias: alias/ and 1-250 characters of letters, digits, '/', '_' or '-'",
                alias.escape_debug()
            ),
        ));
    }
    if name.starts_with("aws/") {
        return Err(bad(
            reference,
            "alias/aws/… names an AWS managed key, which only AWS services may use; \
             create a customer managed key",
        ));
    }
    Ok(())
}

/// A region name such as `us-east-1` or `us-gov-west-1`: lowercase letters and digits in
/// dash-separated groups, the first group letters.
fn check_region(reference: &str, region: &str) -> Result<()> {
    let mut groups = region.split('-');
    let first_ok = groups
        .next()
        .is_some_and(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_lowercase()));
    let rest: Vec<&str> = groups.collect();
    let ok = first_ok
        && !rest.is_empty()
        && region.len() <= 32
        && rest.iter().all(|g| {
            !g.is_empty()
                && g.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(bad(
            reference,
            format!(
                "'{}' is not an AWS region name (e.g. us-east-1, eu-central-1)",
                region.escape_debug()
            ),
        ))
    }
}

/// `https://HOST[:PORT][/]`, or `http://` to a loopback host only (moto, LocalStack on this
/// machine): plain HTTP would carry the DEK, base64 in the request body, unencrypted.
fn check_endpoint(reference: &str, endpoint: &str) -> Result<()> {
    let (https, rest) = if let Some(rest) = endpoint.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(bad(
            reference,
            "endpoint= must be an https:// URL (or http:// to 127.0.0.1, localhost or [::1])",
        ));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty()
        || authority.bytes().any(|b| {
            matches!(b, b'/' | b'?' | b'#' | b'@')
                || b.is_ascii_whitespace()
                || b.is_ascii_control()
        })
    {
        return Err(bad(
            reference,
            "endpoint= must be scheme://HOST[:PORT] with no path, query or user info",
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    if let Some(port) = port {
        if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
            return Err(bad(
                reference,
                format!(
                    "endpoint port '{}' is not a port number",
                    port.escape_debug()
                ),
            ));
        }
    }
    if host.is_empty() {
        return Err(bad(reference, "endpoint= has no host"));
    }
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !https && !loopback {
        return Err(bad(
            reference,
            format!(
                "endpoint '{endpoint}' uses plain http to a host that is not loopback; the DEK would \
                 cross the network unencrypted: use https://"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn good_references_parse_and_print_back() {
        for r in [
            format!("aws-kms:{ID}"),
            "aws-kms:mrk-1234abcd12ab34cd56ef1234567890ab".to_owned(),
            "aws-kms:alias/coffer-main".to_owned(),
            "aws-kms:alias/team/coffer_main-2".to_owned(),
            format!("aws-kms:arn:aws:kms:eu-west-1:111122223333:key/{ID}"),
            "aws-kms:arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/x".to_owned(),
            format!("aws-kms:{ID};region=us-east-1"),
            format!("aws-kms:{ID};region=us-east-1;endpoint=http://127.0.0.1:5055"),
            "aws-kms:alias/a;endpoint=http://localhost:4566/".to_owned(),
            "aws-kms:alias/a;endpoint=https://kms.internal.example".to_owned(),
            "aws-kms:alias/a;endpoint=http://[::1]:8000".to_owned(),
        ] {
            let parsed = AwsKmsReference::parse(&r).unwrap_or_else(|e| panic!("{r}: {e}"));
            assert_eq!(parsed.to_string(), r);
            assert_eq!(r.parse::<AwsKmsReference>().unwrap(), parsed);
        }
    }

    #[test]
    fn the_region_comes_from_the_option_or_the_arn() {
        let r = AwsKmsReference::parse(&format!("aws-kms:{ID};region=ap-south-2")).unwrap();
        assert_eq!(r.region(), Some("ap-south-2"));
        assert_eq!(r.key(), ID);
        let r = AwsKmsReference::parse(&format!(
            "aws-kms:arn:aws:kms:eu-west-1:111122223333:key/{ID}"
        ))
        .unwrap();
        assert_eq!(r.region(), Some("eu-west-1"));
        assert_eq!(r.endpoint(), None);
        let r = AwsKmsReference::parse("aws-kms:alias/x").unwrap();
        assert_eq!(r.region(), None);
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        let cases = [
            ("alias/x", "must start with 'aws-kms:'"),
            ("kms:alias/x", "must start with 'aws-kms:'"),
            ("aws-kms:", "no key"),
            ("aws-kms:;region=us-east-1", "no key"),
            ("aws-kms:not-a-key", "is not a KMS key id"),
            (
                "aws-kms:1234abcd-12ab-34cd-56ef-1234567890",
                "is not a KMS key id",
            ),
            (
                "aws-kms:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                "expected a key id",
            ),
            ("aws-kms:alias/", "is not a KMS alias"),
            ("aws-kms:alias/has space", "is not a KMS alias"),
            ("aws-kms:alias/aws/s3", "AWS managed key"),
            ("aws-kms:arn:aws:s3:us-east-1:111122223333:key/x", "not kms"),
            ("aws-kms:arn:aws:kms:us-east-1:1111:alias/x", "12 digits"),
            (
                "aws-kms:arn:aws:kms:us-east-1:111122223333:grant/x",
                "key/ID or alias/NAME",
            ),
            ("aws-kms:arn:aws:kms:us-east-1", "has the form"),
            (
                "aws-kms:arn:gcp:kms:us-east-1:111122223333:alias/x",
                "not an AWS partition",
            ),
            ("aws-kms:alias/x;region", "must be NAME=VALUE"),
            ("aws-kms:alias/x;region=", "empty value"),
            ("aws-kms:alias/x;region=US-EAST-1", "not an AWS region"),
            ("aws-kms:alias/x;region=useast", "not an AWS region"),
            (
                "aws-kms:alias/x;region=us-east-1;region=us-east-1",
                "given twice",
            ),
            ("aws-kms:alias/x;profile=dev", "unknown option 'profile'"),
            ("aws-kms:alias/x;", "must be NAME=VALUE"),
            (
                "aws-kms:alias/x;endpoint=127.0.0.1:5000",
                "must be an https:// URL",
            ),
            (
                "aws-kms:alias/x;endpoint=http://kms.example.com",
                "not loopback",
            ),
            (
                "aws-kms:alias/x;endpoint=http://127.0.0.1:99999",
                "not a port number",
            ),
            (
                "aws-kms:alias/x;endpoint=http://127.0.0.1:0",
                "not a port number",
            ),
            ("aws-kms:alias/x;endpoint=https://h/path", "no path"),
            (
                "aws-kms:alias/x;endpoint=https://u@h",
                "no path, query or user info",
            ),
            (
                "aws-kms:alias/x;endpoint=https://",
                "no path, query or user info",
            ),
            (
                "aws-kms:arn:aws:kms:eu-west-1:111122223333:alias/x;region=us-east-1",
                "make them agree",
            ),
        ];
        for (r, why) in cases {
            let err = AwsKmsReference::parse(r).expect_err(r).to_string();
            assert!(err.contains(why), "{r}: {err}");
            assert!(
                err.starts_with("configuration error: invalid AWS KMS key reference"),
                "{err}"
            );
        }
    }
}
