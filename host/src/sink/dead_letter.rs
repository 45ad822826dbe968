//! Dead letters: records that could not be loaded, with the reason, where,
//! and the raw message, in `etl.dead_letters` (metadata) and
//! `etl.dead_letter_payloads` (the payload, on which PUBLIC has no rights).
//! With `HOST_DEAD_LETTER_KEY` (64 hex digits) payloads are sealed with
//! AES-256-GCM; without it they are stored as they came.
//!
//! Every text a dead letter stores is made storable where the dead letter
//! is made ([`storable`]): PostgreSQL's `text` refuses U+0000, and a reason
//! may quote a key or a value that holds it.
//!
//! Must not log or return a payload; only `replay` opens one.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};

/// Why and where a record was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub record_index: i32,
    /// `input`, `transform`, `sink` or `source`.
    pub stage: &'static str,
    pub step: Option<i32>,
    pub plugin: Option<String>,
    pub plugin_digest: Option<String>,
    pub reason: String,
    pub received_count: i32,
}

/// The most characters of a reason kept (the rest is cut, marked `…`).
pub const MAX_REASON_CHARS: usize = 2_000;

/// `text` as PostgreSQL's `text` takes it and a person reads it on one
/// line: tabs and line breaks become spaces, other control characters
/// (U+0000 among them, which no `text` value may hold) U+FFFD, and past
/// `MAX_REASON_CHARS` characters it is cut.
pub fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    let clean = !text.chars().any(char::is_control) && text.len() <= MAX_REASON_CHARS;
    if clean {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out: String = text
        .chars()
        .take(MAX_REASON_CHARS)
        .map(|c| match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect();
    if text.chars().nth(MAX_REASON_CHARS).is_some() {
        out.push('…');
    }
    std::borrow::Cow::Owned(out)
}

impl DeadLetter {
    /// A record (or row) that could not be decoded or lacks what it needs.
    pub fn input(reason: String) -> DeadLetter {
        DeadLetter {
            record_index: 0,
            stage: "input",
            step: None,
            plugin: None,
            plugin_digest: None,
            reason: storable(&reason).into_owned(),
            received_count: 1,
        }
    }

    /// A record step `step` (0-based) of the chain rejected.
    pub fn transform(step: usize, plugin: &str, digest: &str, reason: &str, received_count: i32) -> DeadLetter {
        DeadLetter {
            record_index: 0,
            stage: "transform",
            step: Some(step as i32),
            plugin: Some(storable(plugin).into_owned()),
            plugin_digest: Some(digest.to_string()),
            reason: storable(reason).into_owned(),
            received_count,
        }
    }

    /// A message (or object) the source could not take as one, received
    /// `received_count` times.
    pub fn source(reason: String, received_count: u32) -> DeadLetter {
        DeadLetter { stage: "source", received_count: received_count as i32, ..DeadLetter::input(reason) }
    }

    /// A row the database refused: its error code and message (never the
    /// detail, which may quote values).
    pub fn sink(e: &tokio_postgres::Error) -> DeadLetter {
        DeadLetter {
            record_index: 0,
            stage: "sink",
            step: None,
            plugin: None,
            plugin_digest: None,
            reason: storable(&format!("database refused the row: {}", super::refusal(e))).into_owned(),
            received_count: 1,
        }
    }
}

/// Seals payloads with the dead-letter key.
pub struct Sealer {
    cipher: Aes256Gcm,
    key_id: String,
}

impl Sealer {
    /// From `HOST_DEAD_LETTER_KEY` if set; an ill-formed key is an error.
    pub fn from_env() -> Result<Option<Sealer>, String> {
        match std::env::var("HOST_DEAD_LETTER_KEY") {
            Err(_) => Ok(None),
            Ok(hex) => Sealer::new(&hex).map(Some),
        }
    }

    pub fn new(hex: &str) -> Result<Sealer, String> {
        let key = ::hex::decode(hex.trim())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or("HOST_DEAD_LETTER_KEY must be 64 hex digits")?;
        let key_id = format!("{:x}", Sha256::digest(&key))[..12].to_string();
        let cipher = Aes256Gcm::new_from_slice(&key).map_err(|e| e.to_string())?;
        Ok(Sealer { cipher, key_id })
    }

    fn seal(&self, plain: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let nonce: [u8; 12] = rand::random();
        let sealed = self.cipher.encrypt(Nonce::from_slice(&nonce), plain).expect("AES-GCM encryption does not fail");
        (nonce.to_vec(), sealed)
    }

    /// Opens a payload sealed with this key.
    pub fn open(&self, key_id: &str, nonce: &[u8], sealed: &[u8]) -> Result<Vec<u8>, String> {
        if key_id != self.key_id {
            return Err(format!("sealed with key {key_id}, not with the current key {}", self.key_id));
        }
        self.cipher.decrypt(Nonce::from_slice(nonce), sealed).map_err(|_| "payload does not open with this key".into())
    }
}

/// Inserts one dead letter and its payload in the open transaction.
pub async fn insert(
    tx: &tokio_postgres::Transaction<'_>,
    pipeline: &str,
    source: &str,
    message_id: &str,
    d: &DeadLetter,
    payload: &[u8],
    sealer: Option<&Sealer>,
) -> Result<i64, tokio_postgres::Error> {
    let id: i64 = tx
        .query_one(
            "INSERT INTO etl.dead_letters \
             (pipeline, source, message_id, record_index, stage, step, plugin, plugin_digest, reason, received_count) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            &[
                &pipeline,
                &storable(source),
                &storable(message_id),
                &d.record_index,
                &d.stage,
                &d.step,
                &d.plugin.as_deref().map(storable),
                &d.plugin_digest,
                &storable(&d.reason),
                &d.received_count,
            ],
        )
        .await?
        .get(0);
    let (key_id, nonce, body) = match sealer {
        Some(s) => {
            let (nonce, sealed) = s.seal(payload);
            (Some(s.key_id.clone()), Some(nonce), sealed)
        }
        None => (None, None, payload.to_vec()),
    };
    tx.execute(
        "INSERT INTO etl.dead_letter_payloads (dead_letter_id, key_id, nonce, payload) VALUES ($1, $2, $3, $4)",
        &[&id, &key_id, &nonce, &body],
    )
    .await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_made_storable() {
        assert_eq!(storable("duplicate key `id`"), "duplicate key `id`");
        assert!(matches!(storable("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(storable("key `a\0b`\u{1}\n"), "key `a\u{fffd}b`\u{fffd} ");
        let long = "é".repeat(MAX_REASON_CHARS + 5);
        let cut = storable(&long);
        assert_eq!(cut.chars().count(), MAX_REASON_CHARS + 1);
        assert!(cut.ends_with("é…"));
        assert_eq!(storable(&"x".repeat(MAX_REASON_CHARS)).len(), MAX_REASON_CHARS);
        assert_eq!(DeadLetter::input("a\0".into()).reason, "a\u{fffd}");
    }

    #[test]
    fn sealing_round_trips_and_refuses_other_keys() {
        let s = Sealer::new(&"ab".repeat(32)).unwrap();
        let (nonce, sealed) = s.seal(b"{\"ip\":\"10.0.0.1\"}");
        assert!(!sealed.windows(8).any(|w| w == b"10.0.0.1"));
        assert_eq!(s.open(&s.key_id, &nonce, &sealed).unwrap(), b"{\"ip\":\"10.0.0.1\"}");
        let other = Sealer::new(&"cd".repeat(32)).unwrap();
        assert!(other.open(&s.key_id, &nonce, &sealed).is_err());
        assert!(Sealer::new("abc").is_err());
    }
}
