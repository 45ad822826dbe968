//! TLS to PostgreSQL, as libpq's `sslmode` and `sslrootcert` say in
//! `DATABASE_URL`: `disable`; `prefer` (the default: TLS when the server
//! offers it); `require` (TLS or no connection); `verify-ca` (and the
//! server's certificate chains to a trusted root); `verify-full` (and it
//! names the host). `prefer` and `require` check no certificate, as in
//! libpq, unless `sslrootcert` is given: then `require` is `verify-ca`.
//! The roots are `sslrootcert`'s certificates, else the system's
//! (`verify-full` only: `verify-ca` with the system's roots would take any
//! publicly issued certificate, so it needs `sslrootcert`).
//!
//! rustls (through `tokio-postgres-rustls`) with aws-lc-rs, which the AWS
//! SDK builds already: no OpenSSL to link or ship in the image.
//!
//! What the URL does not say comes from where libpq looks: `PGSSLMODE`,
//! then `PGSSLROOTCERT`, else `~/.postgresql/root.crt` when that file
//! exists (so `require` checks the chain against it, as in libpq).
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and not
//! `sslrootcert`: both are taken out of the URL here before it parses the
//! rest. Not with the `url` crate: libpq's multi-host form
//! (`postgres://h1:5432,h2:5433/db`), which tokio-postgres takes, is not a
//! URL to it (checked: `Url::parse` gives `InvalidPort`), so the query is
//! split here and the rest left to tokio-postgres's own parser.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;

/// `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(text: &str) -> Result<Mode, String> {
        Ok(match text {
            "disable" => Mode::Disable,
            // `allow` tries without TLS first; TLS when offered is never worse.
            "allow" | "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }
}

/// What a URL asks of TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub mode: Mode,
    pub root_cert: Option<PathBuf>,
}

/// What libpq takes when the URL does not say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults {
    /// `PGSSLMODE`.
    pub mode: Option<String>,
    /// `PGSSLROOTCERT`, else `~/.postgresql/root.crt` if it exists.
    pub root_cert: Option<PathBuf>,
}

impl Defaults {
    /// From this process's environment (an empty variable is unset).
    pub fn from_env() -> Defaults {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let home_root = || {
            let file = PathBuf::from(var("HOME")?).join(".postgresql").join("root.crt");
            file.is_file().then_some(file)
        };
        Defaults {
            mode: var("PGSSLMODE").map(|v| v.to_string_lossy().into_owned()),
            root_cert: var("PGSSLROOTCERT").map(PathBuf::from).or_else(home_root),
        }
    }
}

/// Takes `sslmode` and `sslrootcert` out of `url` (a `postgres://` URL or
/// `key=value` words): the rest, and what they said, or else what the
/// environment says ([`Defaults::from_env`]).
pub fn split(url: &str) -> Result<(String, Tls), String> {
    split_with(url, &Defaults::from_env())
}

/// [`split`] with `defaults` for what the URL does not say.
pub fn split_with(url: &str, defaults: &Defaults) -> Result<(String, Tls), String> {
    let (rest, mode, root_cert) = split_url(url)?;
    let mode = match (mode, &defaults.mode) {
        (Some(mode), _) => mode,
        (None, Some(text)) => Mode::parse(text).map_err(|e| format!("PGSSLMODE: {e}"))?,
        (None, None) => Mode::Prefer,
    };
    Ok((rest, Tls { mode, root_cert: root_cert.or_else(|| defaults.root_cert.clone()) }))
}

/// The URL without `sslmode` and `sslrootcert`, and what they said.
fn split_url(url: &str) -> Result<(String, Option<Mode>, Option<PathBuf>), String> {
    let (mut mode, mut root_cert) = (None, None);
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => mode = Some(Mode::parse(value)?),
            "sslrootcert" => root_cert = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    if url.contains("://") {
        let Some((base, query)) = url.split_once('?') else { return Ok((url.to_string(), mode, root_cert)) };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(key, &percent_decode(value))? {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        return Ok((rest, mode, root_cert));
    }
    let mut kept = Vec::new();
    for word in url.split_whitespace() {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        if !take(key.trim(), value.trim_matches('\''))? {
            kept.push(word);
        }
    }
    Ok((kept.join(" "), mode, root_cert))
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

impl Tls {
    /// What tokio-postgres is told: TLS off, tried, or required.
    pub fn ssl_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            Mode::Disable => tokio_postgres::config::SslMode::Disable,
            Mode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }

    /// The connector for these settings.
    pub fn connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        if self.mode == Mode::VerifyCa && self.root_cert.is_none() {
            // Any certificate a public CA issued, for any name, would pass.
            return Err("sslmode=verify-ca checks no host name, so it needs sslrootcert naming your own CA; \
                        with the system's roots use sslmode=verify-full"
                .into());
        }
        let verify = match (self.mode, &self.root_cert) {
            (Mode::VerifyFull, _) => Check::Full,
            (Mode::VerifyCa, _) | (Mode::Require, Some(_)) => Check::Chain,
            _ => Check::Nothing,
        };
        let webpki = match verify {
            Check::Nothing => None,
            Check::Chain | Check::Full => Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(self.roots()?), provider.clone())
                    .build()
                    .map_err(|e| format!("cannot use the TLS roots: {e}"))?,
            ),
        };
        let verifier = Arc::new(Verifier { check: verify, provider: provider.clone(), webpki });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }

    /// `sslrootcert`'s certificates, or the system's.
    fn roots(&self) -> Result<rustls::RootCertStore, String> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!("sslrootcert {}: no certificate in it", path.display()));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(format!(
                        "sslmode={} needs trusted roots: the system has none (set sslrootcert)",
                        self.mode.name()
                    ));
                }
            }
        }
        Ok(roots)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Check {
    Nothing,
    Chain,
    Full,
}

/// The server's certificate checked as `check` says: not at all (`prefer`
/// and `require` without a root, as libpq: the connection is encrypted,
/// the certificate taken as it comes), its chain only (`verify-ca`: a
/// mismatched name is let through), or chain and name (`verify-full`).
/// Handshake signatures are checked in every case.
#[derive(Debug)]
struct Verifier {
    check: Check,
    provider: Arc<CryptoProvider>,
    /// The chain's checker; `None` for [`Check::Nothing`].
    webpki: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else { return Ok(ServerCertVerified::assertion()) };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.check == Check::Chain => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> Result<(String, Tls), String> {
        split_with(url, &Defaults::default())
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_urls_and_words() {
        let (rest, tls) =
            split("postgres://u@h:5432/db?connect_timeout=3&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem").unwrap();
        assert_eq!(rest, "postgres://u@h:5432/db?connect_timeout=3");
        assert_eq!(tls, Tls { mode: Mode::VerifyFull, root_cert: Some("/etc/ca.pem".into()) });
        let (rest, tls) = split("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!((rest.as_str(), tls.mode), ("postgres://u@h/db", Mode::Require));
        let (rest, tls) = split("postgres://u@h/db").unwrap();
        assert_eq!((rest.as_str(), tls.mode), ("postgres://u@h/db", Mode::Prefer));
        let (rest, tls) = split("host=h user=u sslmode=disable dbname=d").unwrap();
        assert_eq!((rest.as_str(), tls.mode), ("host=h user=u dbname=d", Mode::Disable));
        let err = split("postgres://u@h/db?sslmode=always").unwrap_err();
        assert!(err.contains("sslmode `always` is not one of"), "{err}");
    }

    #[test]
    fn the_environment_says_what_the_url_does_not() {
        let env = Defaults { mode: Some("verify-full".into()), root_cert: Some("/home/u/.postgresql/root.crt".into()) };
        let (_, tls) = split_with("postgres://u@h/db", &env).unwrap();
        assert_eq!(tls, Tls { mode: Mode::VerifyFull, root_cert: Some("/home/u/.postgresql/root.crt".into()) });
        let (_, tls) = split_with("postgres://u@h/db?sslmode=disable&sslrootcert=/ca.pem", &env).unwrap();
        assert_eq!(tls, Tls { mode: Mode::Disable, root_cert: Some("/ca.pem".into()) });
        let bad = Defaults { mode: Some("always".into()), root_cert: None };
        let err = split_with("postgres://u@h/db", &bad).unwrap_err();
        assert!(err.starts_with("PGSSLMODE: sslmode `always` is not one of"), "{err}");
        assert!(split_with("postgres://u@h/db?sslmode=require", &bad).is_ok(), "the URL's own wins");
    }
}
