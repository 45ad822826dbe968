//! Hashing through the host's `hex-digests` import. Compiled natively (plugin
//! unit tests, the native benchmark baseline), the same digests are computed
//! here by the crate the host uses, so tests check real vectors without a
//! host.

pub use crate::bindings::etl::transform::host::Algorithm;

/// Lowercase hex digests of the inputs `data[ends[i-1]..ends[i]]`, end to end.
#[cfg(target_arch = "wasm32")]
pub fn hex_digests(algorithm: Algorithm, secret: Option<&str>, data: &[u8], ends: &[u32]) -> Result<Vec<u8>, String> {
    crate::bindings::etl::transform::host::hex_digests(algorithm, secret, data, ends)
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::{grant_native_secret, hex_digests};

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::Algorithm;
    use std::cell::RefCell;
    use std::collections::HashMap;

    thread_local! {
        static SECRETS: RefCell<HashMap<String, Vec<u8>>> = RefCell::new(HashMap::new());
    }

    /// Natively, stands in for the host's secret grants.
    pub fn grant_native_secret(name: &str, key: &[u8]) {
        SECRETS.with(|s| s.borrow_mut().insert(name.to_string(), key.to_vec()));
    }

    pub fn hex_digests(
        algorithm: Algorithm,
        secret: Option<&str>,
        data: &[u8],
        ends: &[u32],
    ) -> Result<Vec<u8>, String> {
        let key = match (algorithm, secret) {
            (Algorithm::HmacSha256, Some(name)) => Some(
                SECRETS
                    .with(|s| s.borrow().get(name).cloned())
                    .ok_or_else(|| format!("secret `{name}` is not granted"))?,
            ),
            (Algorithm::HmacSha256, None) => return Err("hmac-sha256 needs a secret".into()),
            _ => None,
        };
        let algorithm = match algorithm {
            Algorithm::Sha256 => digests::Algorithm::Sha256,
            Algorithm::Sha512 => digests::Algorithm::Sha512,
            Algorithm::HmacSha256 => digests::Algorithm::HmacSha256,
        };
        digests::hex_digests(algorithm, key.as_deref(), data, ends)
    }
}
