//! Hashing through the host's `hex-digests` import. Compiled natively (plugin
//! unit tests, the native benchmark baseline), the same digests are computed
//! here, so tests check real vectors without a host.

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
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256, Sha512};
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
            (Algorithm::HmacSha256, Some(name)) => SECRETS
                .with(|s| s.borrow().get(name).cloned())
                .ok_or_else(|| format!("secret `{name}` is not granted"))?,
            (Algorithm::HmacSha256, None) => return Err("hmac-sha256 needs a secret".into()),
            _ => Vec::new(),
        };
        let width = if matches!(algorithm, Algorithm::Sha512) { 128 } else { 64 };
        let mut out = Vec::with_capacity(ends.len() * width);
        let mut start = 0usize;
        for &end in ends {
            let input = data.get(start..end as usize).ok_or("ends out of range")?;
            start = end as usize;
            match algorithm {
                Algorithm::Sha256 => push_hex(&mut out, &Sha256::digest(input)),
                Algorithm::Sha512 => push_hex(&mut out, &Sha512::digest(input)),
                Algorithm::HmacSha256 => {
                    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
                    mac.update(input);
                    push_hex(&mut out, &mac.finalize().into_bytes());
                }
            }
        }
        Ok(out)
    }

    fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in bytes {
            out.extend_from_slice(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}
