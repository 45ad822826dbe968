//! The `hex-digests` import: SHA-256, SHA-512 and HMAC-SHA-256 of many inputs
//! per call, computed natively (the `sha2` crate uses the CPU's SHA
//! instructions when present, which guest code cannot).

use super::wit::Algorithm;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// Hex digests of `data[ends[i-1]..ends[i]]`, end to end. `key` is the
/// granted secret's bytes, for HMAC.
pub fn hex_digests(algorithm: Algorithm, key: Option<&[u8]>, data: &[u8], ends: &[u32]) -> Result<Vec<u8>, String> {
    let width = match algorithm {
        Algorithm::Sha512 => 128,
        Algorithm::Sha256 | Algorithm::HmacSha256 => 64,
    };
    let mut out = Vec::with_capacity(ends.len() * width);
    let mut start = 0usize;
    let mac = match (algorithm, key) {
        (Algorithm::HmacSha256, Some(key)) => Some(Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?),
        (Algorithm::HmacSha256, None) => return Err("hmac-sha256 needs a granted secret".into()),
        _ => None,
    };
    for &end in ends {
        let end = end as usize;
        if end < start || end > data.len() {
            return Err(format!("ends are not ascending within the data ({} bytes)", data.len()));
        }
        let input = &data[start..end];
        start = end;
        match algorithm {
            Algorithm::Sha256 => push_hex(&mut out, &Sha256::digest(input)),
            Algorithm::Sha512 => push_hex(&mut out, &Sha512::digest(input)),
            Algorithm::HmacSha256 => {
                let mut m = mac.clone().expect("checked above");
                m.update(input);
                push_hex(&mut out, &m.finalize().into_bytes());
            }
        }
    }
    Ok(out)
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 128];
    for (i, b) in bytes.iter().take(64).enumerate() {
        buf[2 * i] = HEX[(b >> 4) as usize];
        buf[2 * i + 1] = HEX[(b & 15) as usize];
    }
    out.extend_from_slice(&buf[..2 * bytes.len().min(64)]);
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
