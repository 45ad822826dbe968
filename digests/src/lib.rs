//! Lowercase hex digests of many inputs in one call: what the host's
//! `hex-digests` import computes for plugins, and what the plugin SDK
//! computes natively (plugin unit tests, the native benchmark baseline), so
//! both give the same bytes. The `sha2` crate uses the CPU's SHA
//! instructions when present, which guest code cannot.
//!
//! Must not know where a key comes from: callers resolve secrets.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// The algorithms offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
    HmacSha256,
}

impl Algorithm {
    /// Hex digits of one digest.
    pub fn width(self) -> usize {
        match self {
            Algorithm::Sha512 => 128,
            Algorithm::Sha256 | Algorithm::HmacSha256 => 64,
        }
    }
}

/// Hex digests of `data[ends[i-1]..ends[i]]`, end to end. `key` is the
/// HMAC key (required for `HmacSha256`, ignored otherwise).
pub fn hex_digests(algorithm: Algorithm, key: Option<&[u8]>, data: &[u8], ends: &[u32]) -> Result<Vec<u8>, String> {
    let mac = match (algorithm, key) {
        (Algorithm::HmacSha256, Some(key)) => Some(Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?),
        (Algorithm::HmacSha256, None) => return Err("hmac-sha256 needs a granted secret".into()),
        _ => None,
    };
    let mut out = Vec::with_capacity(ends.len() * algorithm.width());
    let mut start = 0usize;
    for &end in ends {
        let end = end as usize;
        if end < start || end > data.len() {
            return Err(format!("ends are not ascending within the data ({} bytes)", data.len()));
        }
        let input = &data[start..end];
        start = end;
        match (algorithm, &mac) {
            (Algorithm::Sha512, _) => push_hex(&mut out, &Sha512::digest(input)),
            (Algorithm::HmacSha256, Some(mac)) => {
                let mut m = mac.clone();
                m.update(input);
                push_hex(&mut out, &m.finalize().into_bytes());
            }
            _ => push_hex(&mut out, &Sha256::digest(input)),
        }
    }
    Ok(out)
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut buf = [0u8; 128];
    let hex = &mut buf[..2 * bytes.len()];
    hex::encode_to_slice(bytes, hex).expect("the buffer is twice the digest");
    out.extend_from_slice(hex);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from coreutils sha256sum/sha512sum and Python's hmac module.
    #[test]
    fn known_vectors() {
        let data = b"abc199.172.111.135";
        let got = hex_digests(Algorithm::Sha256, None, data, &[3, 18]).unwrap();
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\
                    a6d0e2f27f6111e10b06790db42f34123e724aa0fd24b280f4a0ef5ee986784c";
        assert_eq!(String::from_utf8(got).unwrap(), want);
        let got = hex_digests(Algorithm::Sha512, None, b"abc", &[3]).unwrap();
        assert!(String::from_utf8(got).unwrap().starts_with("ddaf35a193617aba"));
        let msg = b"The quick brown fox jumps over the lazy dog";
        let got = hex_digests(Algorithm::HmacSha256, Some(b"key"), msg, &[msg.len() as u32]).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
    }

    #[test]
    fn empty_inputs_and_bad_ends() {
        let got = hex_digests(Algorithm::Sha256, None, b"", &[0]).unwrap();
        assert_eq!(&got[..8], b"e3b0c442");
        assert!(hex_digests(Algorithm::Sha256, None, b"ab", &[2, 1]).is_err());
        assert!(hex_digests(Algorithm::Sha256, None, b"ab", &[3]).is_err());
        assert!(hex_digests(Algorithm::HmacSha256, None, b"ab", &[2]).is_err());
    }
}
