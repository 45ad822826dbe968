//! The `hex-digests` import: the WIT call onto the `digests` crate, which
//! the plugin SDK uses natively too, so both compute the same bytes.
//!
//! Must not see secret names: the sandbox resolves grants to keys.

use super::wit::Algorithm;

/// Hex digests of `data[ends[i-1]..ends[i]]`, end to end. `key` is the
/// granted secret's bytes, for HMAC.
pub fn hex_digests(algorithm: Algorithm, key: Option<&[u8]>, data: &[u8], ends: &[u32]) -> Result<Vec<u8>, String> {
    let algorithm = match algorithm {
        Algorithm::Sha256 => digests::Algorithm::Sha256,
        Algorithm::Sha512 => digests::Algorithm::Sha512,
        Algorithm::HmacSha256 => digests::Algorithm::HmacSha256,
    };
    digests::hex_digests(algorithm, key, data, ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wit_algorithms_map_onto_the_digests() {
        let got = hex_digests(Algorithm::Sha256, None, b"abc", &[3]).unwrap();
        assert!(got.starts_with(b"ba7816bf"));
        let got = hex_digests(Algorithm::Sha512, None, b"abc", &[3]).unwrap();
        assert!(got.starts_with(b"ddaf35a1"));
        assert!(hex_digests(Algorithm::HmacSha256, None, b"ab", &[2]).is_err());
    }
}
